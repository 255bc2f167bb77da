"""Time per certified input for Gaussian randomized smoothing (RS), three contenders in one process.

Command (from the repository root, with the project's venv active; about 3 minutes on a quiet
2-core machine, most of it the peer; 7 minutes at load average 5, 23 at load average 13):

    python benchmarks/bench_rs.py

which is the same as

    python benchmarks/bench_rs.py --model models/fmnist-rs-0.25.onnx --inputs 3 -n 100000 --n0 100 \\
        --alpha 0.001 --rounds 3

Add ``--json summary.json`` (or ``--json -`` for stdout) for a machine-readable summary.

Contenders, run on the same first K Fashion-MNIST test images with the same batch size:

* bare:    the limit. A plain onnxruntime session with default options (what running the model
           alone gives, one run spread over every core) runs n0 + n samples per input from batches
           made in advance, one after another: no noise, no counting.
* certify: ``certifier.load(model, plugin="rs", sigma=...).certify(x, n0=, n=, alpha=, batch_size=)``.
* peer:    Cohen et al.'s ``Smooth.certify`` (locuslab/smoothing, code/core.py) re-implemented in
           PyTorch on the same network, rebuilt with ``certifier_plugins.train.build_network`` and
           loaded with the ONNX file's weights (checked against onnxruntime before timing).

Each round runs the contenders one after another in a rotating order, so slow drifts of a busy
machine hit all of them alike; the summary is the median over rounds of the per-round ratios.
Two non-competing measurements explain the gap: ``parallel`` runs the same premade batches on
certify's own session (single-threaded runs, as many side by side as certify runs), and ``noise``
times ``certifier.noise.gaussian_views`` alone (one thread) for the same number of samples.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchlib import Report, benchmark_parser, check_counts, load_average, medians

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "fmnist-rs-0.25.onnx"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion_mnist.npz"
CONTENDERS = ("bare", "certify", "peer", "parallel", "noise")


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, model=DEFAULT_MODEL, data=DEFAULT_DATA, inputs=3, inputs_help="first K test images",
                              data_help=".npz with x_test (uint8 images) and y_test")
    parser.add_argument("--sigma", type=float, default=None, help="noise level (default: the model's metadata)")
    return check_counts(parser, parser.parse_args(argv))


# -- the peer: Cohen et al.'s Smooth.certify, in PyTorch -------------------------------------


class CohenSmooth:
    """Cohen, Rosenfeld and Kolter's smoothed classifier, CERTIFY as in their core.py."""

    ABSTAIN = -1

    def __init__(self, base_classifier, num_classes: int, sigma: float):
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.sigma = sigma

    def certify(self, x, n0: int, n: int, alpha: float, batch_size: int) -> tuple[int, float]:
        from scipy.stats import norm

        self.base_classifier.eval()
        selection = self._sample_noise(x, n0, batch_size)
        top = int(selection.argmax())
        estimation = self._sample_noise(x, n, batch_size)
        p_lower = self._lower_confidence_bound(int(estimation[top]), n, alpha)
        if p_lower < 0.5:
            return self.ABSTAIN, 0.0
        return top, self.sigma * float(norm.ppf(p_lower))

    def _sample_noise(self, x, num: int, batch_size: int) -> np.ndarray:
        import torch

        with torch.no_grad():
            counts = np.zeros(self.num_classes, dtype=np.int64)
            remaining = num
            while remaining > 0:
                size = min(batch_size, remaining)
                remaining -= size
                batch = x.repeat((size,) + (1,) * x.dim())
                noise = torch.randn_like(batch) * self.sigma
                predictions = self.base_classifier(batch + noise).argmax(1)
                counts += np.bincount(predictions.numpy(), minlength=self.num_classes)
            return counts

    @staticmethod
    def _lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
        # statsmodels' proportion_confint(k, n, alpha=2 * alpha, method="beta")[0], which Cohen
        # uses, is this Beta quantile, and 0 when k = 0.
        from scipy.stats import beta

        if successes == 0:
            return 0.0
        return float(beta.ppf(alpha, successes, trials - successes + 1))


def torch_network(model_path: Path, input_shape: tuple[int, ...], classes: int):
    """build_network(...) with the ONNX file's weights; fails loudly on any mismatch."""
    import onnx
    import torch
    from onnx import numpy_helper

    from certifier_plugins.train import build_network

    proto = onnx.load(str(model_path))
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    first = next((node for node in proto.graph.node if node.op_type == "Conv"), None)
    if first is not None:
        width = int(weights[first.input[1]].shape[0])
    else:  # the flat-input MLP: its first layer has 8 * width units
        first = next(node for node in proto.graph.node if node.op_type in ("Gemm", "MatMul"))
        width = int(weights[first.input[1]].shape[0]) // 8
    network = build_network(input_shape, classes, width)
    state = network.state_dict()
    missing = [key for key in state if key not in weights]
    if missing:
        raise SystemExit(f"bench_rs: the ONNX file has no initializer for {missing} "
                         f"(it has {sorted(weights)}); is it a build_network model?")
    wrong = [f"{key}: torch {tuple(value.shape)} vs onnx {weights[key].shape}"
             for key, value in state.items() if tuple(value.shape) != weights[key].shape]
    if wrong:
        raise SystemExit("bench_rs: weight shapes differ: " + "; ".join(wrong))
    network.load_state_dict({key: torch.from_numpy(np.array(weights[key])) for key in state}, strict=True)
    unused = sorted(set(weights) - set(state))
    return network.eval(), width, unused


def check_same_network(network, model, images: np.ndarray, sigma: float) -> float:
    """torch logits == onnxruntime logits on the clean inputs and a few noisy views of each."""
    import torch

    rng = np.random.default_rng(1)
    views = [images] + [images + sigma * rng.standard_normal(images.shape, dtype=np.float32) for _ in range(3)]
    batch = np.ascontiguousarray(np.concatenate(views), dtype=np.float32)
    expected = model.session.run([model.output.name], {model.input_name: batch})[0]
    with torch.no_grad():
        got = network(torch.from_numpy(batch)).numpy()
    difference = float(np.abs(got - expected).max())
    if not np.allclose(got, expected, rtol=1e-4, atol=1e-4):
        raise SystemExit(f"bench_rs: torch and onnxruntime logits differ (max |diff| {difference:.3g}); "
                         f"the peer would not run the same network")
    if not (got.argmax(1) == expected.argmax(1)).all():
        raise SystemExit("bench_rs: torch and onnxruntime disagree on a predicted class")
    return difference


# -- the contenders --------------------------------------------------------------------------


def batch_sizes(count: int, batch_size: int) -> list[int]:
    return [min(batch_size, count - start) for start in range(0, count, batch_size)]


class Bench:
    def __init__(self, args, run, images: np.ndarray, network, batch_size: int):
        import onnxruntime
        import torch

        self.args, self.run, self.images, self.batch_size = args, run, images, batch_size
        self.model = run.model
        self.sigma = float(run.method.sigma)
        self.peer = CohenSmooth(network, self.model.num_classes, self.sigma)
        self.torch_images = [torch.from_numpy(image.copy()) for image in images]
        # The limit's inputs: noisy views of the first image, made once; smaller batches are
        # contiguous copies of its first rows, made once per size.
        rng = np.random.default_rng(2)
        full = images[0] + self.sigma * rng.standard_normal((batch_size,) + images.shape[1:], dtype=np.float32)
        self.premade = {batch_size: np.ascontiguousarray(full, dtype=np.float32)}
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.bare_session = onnxruntime.InferenceSession(str(self.model.path), options,
                                                         providers=self.model.providers)

    def schedule(self, n: int) -> list[int]:
        """Batch sizes certify runs for one input: selection, then estimation."""
        return batch_sizes(self.args.n0, self.batch_size) + batch_sizes(n, self.batch_size)

    def premade_batch(self, size: int) -> np.ndarray:
        if size not in self.premade:
            self.premade[size] = self.premade[self.batch_size][:size].copy()
        return self.premade[size]

    def bare(self, round_number: int, n: int) -> dict:
        session, input_name, output = self.bare_session, self.model.input_name, [self.model.output.name]
        batches = [self.premade_batch(size) for size in self.schedule(n)]
        seconds = []
        for _ in self.images:
            start = time.perf_counter()
            for batch in batches:
                session.run(output, {input_name: batch})
            seconds.append(time.perf_counter() - start)
        return {"seconds": seconds}

    def certify(self, round_number: int, n: int) -> dict:
        args = self.args
        seconds, predictions, radii, p_lowers, top_votes = [], [], [], [], []
        start = time.perf_counter()
        for result in self.run.results(self.images, n0=args.n0, n=n, alpha=args.alpha,
                                       batch_size=self.batch_size, seed=round_number):
            now = time.perf_counter()
            seconds.append(now - start)  # the first one includes the engine's setup
            start = now
            predictions.append(-1 if result.prediction is None else int(result.prediction))
            radii.append(float(result.radius))
            p_lowers.append(float(result.details.get("p_lower", float("nan"))))
            top_votes.append(int(result.details.get("top_votes", -1)))
        return {"seconds": seconds, "predictions": predictions, "radii": radii,
                "p_lower": p_lowers, "top_votes": top_votes}

    def peer_run(self, round_number: int, n: int) -> dict:
        import torch

        args = self.args
        torch.manual_seed(round_number)
        seconds, predictions, radii = [], [], []
        for x in self.torch_images:
            start = time.perf_counter()
            prediction, radius = self.peer.certify(x, args.n0, n, args.alpha, self.batch_size)
            seconds.append(time.perf_counter() - start)
            predictions.append(int(prediction))
            radii.append(float(radius))
        return {"seconds": seconds, "predictions": predictions, "radii": radii}

    def parallel(self, round_number: int, n: int) -> dict:
        """The premade batches on certify's session, ``parallel_runs`` at a time."""
        from concurrent.futures import ThreadPoolExecutor

        session, input_name, output = self.model.session, self.model.input_name, [self.model.output.name]
        batches = [self.premade_batch(size) for size in self.schedule(n)]
        seconds = []
        with ThreadPoolExecutor(self.model.parallel_runs) as pool:
            for _ in self.images:
                start = time.perf_counter()
                list(pool.map(lambda batch: session.run(output, {input_name: batch}), batches))
                seconds.append(time.perf_counter() - start)
        return {"seconds": seconds}

    def noise(self, round_number: int, n: int) -> dict:
        """certify's view making alone, in this thread: one generator per batch as the engine
        seeds them, then certifier.noise.gaussian_views on the broadcast input."""
        from certifier.noise import gaussian_views

        schedule, seconds = self.schedule(n), []
        for index, x in enumerate(self.images):
            start = time.perf_counter()
            for batch, size in enumerate(schedule):
                seed = np.random.SeedSequence(round_number, spawn_key=(index, 1, 0, batch))
                rng = np.random.Generator(np.random.PCG64(seed))
                gaussian_views(np.broadcast_to(x, (size,) + x.shape), self.sigma, rng)
            seconds.append(time.perf_counter() - start)
        return {"seconds": seconds}

    def contender(self, name: str):
        return {"bare": self.bare, "certify": self.certify, "peer": self.peer_run, "parallel": self.parallel,
                "noise": self.noise}[name]


# -- reporting -------------------------------------------------------------------------------


def radius_tolerance(sigma: float, p_lower: float, top_votes: int, n: int) -> float:
    """How far two independent runs' radii may fairly be apart: six standard deviations of
    the estimated pA carried through sigma * Phi^-1 (delta method), at least 1e-3."""
    from scipy.stats import norm

    if not (0.5 <= p_lower < 1) or top_votes < 0:
        return 1e-3
    p_hat = min(max(top_votes / n, 1 / n), 1 - 1 / n)
    spread = math.sqrt(p_hat * (1 - p_hat) / n)
    slope = sigma / float(norm.pdf(norm.ppf(p_lower)))
    return max(1e-3, 6 * spread * slope)


def thread_report(model) -> dict:
    import torch

    options = model.session.get_session_options()
    return {
        "cores": os.cpu_count(),
        "certify_runs_side_by_side": model.parallel_runs,
        "certify_intra_op_threads_per_run": options.intra_op_num_threads,
        "bare_intra_op_threads": 0,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    report = Report(args.json)
    say = report.say
    began = time.perf_counter()
    import onnxruntime
    import torch

    import certifier

    if not args.model.is_file():
        raise SystemExit(f"bench_rs: no model at {args.model} (train one: certify train --plugin rs ...)")
    run = certifier.load(args.model, plugin="rs", sigma=args.sigma)
    model = run.model
    if run.method.sigma is None:
        raise SystemExit("bench_rs: the model's metadata has no sigma; pass --sigma")
    sigma = float(run.method.sigma)
    if model.output.kind != "scores" or not model.num_classes:
        raise SystemExit(f"bench_rs: need a model with class scores, got output kind {model.output.kind!r}")
    with np.load(args.data, allow_pickle=False) as archive:
        raw, labels = archive["x_test"][: args.inputs], archive["y_test"][: args.inputs]
    if len(raw) < args.inputs:
        raise SystemExit(f"bench_rs: {args.data} has only {len(raw)} test images")
    images = (raw.astype(np.float32) / np.float32(255))[:, None]  # (K, 1, H, W) in [0, 1]
    input_shape = tuple(images.shape[1:])
    if tuple(model.input_dims) != input_shape:
        raise SystemExit(f"bench_rs: the model takes {model.input_dims}, the images are {input_shape}")
    batch_size = args.batch_size or run.engine(input_shape).batch_size
    network, width, unused = torch_network(args.model, input_shape, model.num_classes)
    difference = check_same_network(network, model, images, sigma)
    threads = thread_report(model)

    say(f"RS benchmark: {args.model.name} (sha256 {model.sha256[:12]}), sigma {sigma:g}, "
        f"{model.num_classes} classes, build_network width {width}")
    say(f"  inputs: {args.data.name} x_test[0:{args.inputs}], labels {labels.tolist()}; n0 {args.n0}, "
        f"n {args.n}, alpha {args.alpha:g}, batch {batch_size}"
        f"{' (certify auto)' if args.batch_size is None else ''}, rounds {args.rounds}")
    say(f"  threads: bare: one onnxruntime run at a time, default intra-op threads (one per physical core); "
        f"certify and parallel: {threads['certify_runs_side_by_side']} runs side by side, "
        f"{threads['certify_intra_op_threads_per_run']} thread each; torch {threads['torch_threads']} "
        f"(default); cores {threads['cores']}")
    say(f"  versions: python {platform.python_version()}, numpy {np.__version__}, onnxruntime "
        f"{onnxruntime.__version__} {model.providers[0]}, torch {torch.__version__}")
    say(f"  peer check: torch logits == onnxruntime logits on {4 * args.inputs} views "
        f"(max |diff| {difference:.2g}){'; unused initializers ' + str(unused) if unused else ''}")
    say(f"  load average before: {load_average()}")

    bench = Bench(args, run, images, network, batch_size)
    # Warm-up: thread pools, kernels and lazy imports, with one estimation batch.
    for name in CONTENDERS:
        bench.contender(name)(10_000, batch_size)

    samples = args.n0 + args.n
    rounds = []
    say()
    header = (f"{'round':>5}  {'order':<36}{'bare':>9}{'certify':>9}{'peer':>9}{'parallel':>9}{'noise':>9}"
              f"{'certify/bare':>14}{'peer/certify':>14}")
    say(f"seconds per certified input ({samples} samples each); parallel = the bare batches on certify's "
        f"side-by-side runs; noise = certify's view making alone")
    say(header)
    for number in range(args.rounds):
        shift = number % len(CONTENDERS)
        order = CONTENDERS[shift:] + CONTENDERS[:shift]
        measured = {}
        for name in order:
            measured[name] = bench.contender(name)(number, args.n)
            time.sleep(0.2)  # let the previous contender's spinning threads go idle
        per_input = {name: sum(m["seconds"]) / len(m["seconds"]) for name, m in measured.items()}
        ratios = {"certify/bare": per_input["certify"] / per_input["bare"],
                  "peer/certify": per_input["peer"] / per_input["certify"]}
        rounds.append({"order": list(order), "per_input_seconds": per_input, "ratios": ratios,
                       "detail": measured})
        say(f"{number + 1:>5}  {','.join(order):<36}" + "".join(f"{per_input[c]:>9.3f}" for c in CONTENDERS)
            + f"{ratios['certify/bare']:>14.3f}{ratios['peer/certify']:>14.3f}")

    median_seconds = medians([r["per_input_seconds"] for r in rounds], CONTENDERS)
    median_ratios = medians([r["ratios"] for r in rounds], ("certify/bare", "peer/certify"))
    say(f"{'median':>5}  {'':<36}" + "".join(f"{median_seconds[c]:>9.3f}" for c in CONTENDERS)
        + f"{median_ratios['certify/bare']:>14.3f}{median_ratios['peer/certify']:>14.3f}")
    aims = {"certify/bare": median_ratios["certify/bare"] <= 1.1, "peer/certify": median_ratios["peer/certify"] >= 3}
    say(f"aims: certify/bare <= 1.1: {'met' if aims['certify/bare'] else 'NOT met'}; "
        f"peer/certify >= 3: {'met' if aims['peer/certify'] else 'NOT met'}")

    bare, views, cert = median_seconds["bare"], median_seconds["noise"], median_seconds["certify"]
    side = median_seconds["parallel"]
    runs = model.parallel_runs
    say()
    say("where certify's time goes (medians, s/input):")
    say(f"  bare batches on certify's {runs} side-by-side runs {side:.3f} ({side / bare:.3f}x bare); "
        f"views alone {views:.3f} on 1 thread, {views / runs:.3f} spread over {runs}; "
        f"sum {side + views / runs:.3f}; certify {cert:.3f}")
    say(f"  gap to the limit {cert - bare:+.3f} s = {100 * (cert - bare) / bare:.0f}% of bare; views alone are "
        f"{100 * views / bare:.0f}% of bare ({1e9 * views / (samples * int(np.prod(input_shape))):.2f} ns per value,"
        f" 1 thread)")

    # Agreement: same predictions, radii within sampling error (different noise).
    say()
    say("agreement, certify vs peer (different noise, so radii differ a little; -1 = abstain):")
    say(f"{'input':>5}{'label':>6}  {'certify pred':>12} {'radius':>8}  {'peer pred':>9} {'radius':>8}"
        f"  {'max|dr|':>8} {'tol':>7}  ok")
    agreement = []
    for index in range(args.inputs):
        pairs = []
        for r in rounds:
            c, p = r["detail"]["certify"], r["detail"]["peer"]
            tolerance = radius_tolerance(sigma, c["p_lower"][index], c["top_votes"][index], args.n)
            pairs.append((c["predictions"][index], c["radii"][index], p["predictions"][index],
                          p["radii"][index], tolerance))
        same_prediction = all(cp == pp for cp, _, pp, _, _ in pairs)
        worst = max(abs(cr - pr) for _, cr, _, pr, _ in pairs)
        tolerance = max(t for *_, t in pairs)
        ok = same_prediction and all(abs(cr - pr) <= t for _, cr, _, pr, t in pairs)
        first = pairs[0]
        agreement.append({"input": index, "label": int(labels[index]), "certify_prediction": first[0],
                          "certify_radius": first[1], "peer_prediction": first[2], "peer_radius": first[3],
                          "max_radius_difference": worst, "tolerance": tolerance, "ok": ok,
                          "rounds": [list(p) for p in pairs]})
        say(f"{index:>5}{int(labels[index]):>6}  {first[0]:>12} {first[1]:>8.4f}  {first[2]:>9} {first[3]:>8.4f}"
            f"  {worst:>8.4f} {tolerance:>7.4f}  {'yes' if ok else 'NO'}")
    say("(radius columns: round 1; max|dr| and ok: over all rounds)")
    all_agree = all(a["ok"] for a in agreement)
    say(f"load average after: {load_average()}; total {time.perf_counter() - began:.0f} s")

    if args.json:
        report.write_json({
            "model": str(args.model), "model_sha256": model.sha256, "sigma": sigma, "inputs": args.inputs,
            "n0": args.n0, "n": args.n, "alpha": args.alpha, "batch_size": batch_size, "rounds": args.rounds,
            "threads": threads, "median_seconds_per_input": median_seconds, "median_ratios": median_ratios,
            "aims_met": aims, "agreement_ok": all_agree, "agreement": agreement,
            "per_round": [{k: v for k, v in r.items() if k != "detail"} | {"per_input_detail": {
                name: r["detail"][name]["seconds"] for name in CONTENDERS}} for r in rounds],
            "versions": {"python": platform.python_version(), "numpy": np.__version__,
                         "onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
            "load_average_after": load_average(),
        })
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
