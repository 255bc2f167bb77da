"""Time per certified input for Gaussian randomized smoothing (RS): certify against bare onnxruntime.

Command (from the repository root, with the project's venv active; about 4 minutes on a quiet
2-core machine, most of it the peer; run it under the heavy lock where the machine is shared):

    python benchmarks/bench_rs.py

which is the same as

    python benchmarks/bench_rs.py --model models/fmnist-rs-0.25.onnx --inputs 3 -n 100000 --n0 100 \\
        --alpha 0.001 --rounds 7

Add ``--json summary.json`` (or ``--json -`` for stdout) for a machine-readable summary, ``--no-peer``
to leave the PyTorch peer out (rounds are then about 3x shorter).

Measurements, on the same first K Fashion-MNIST test images with the same batch size:

* pinned:  the limit certify is measured against. A plain onnxruntime session with certify's own
           session options (single-threaded runs, as many side by side as certify runs, from a
           thread pool) runs n0 + n samples per input from batches made in advance: no noise, no
           counting. Its threads are laid out as certify's, so the machine's load moves both alike.
* bare:    the same batches on a session with onnxruntime's default options (one run at a time,
           spread over every core): what running the model alone gives. Its time moves more with
           the load (its threads meet at a barrier after every operator), so it is reported beside
           the decision figure, not as it.
* certify: ``certifier.load(model, plugin="rs", sigma=...).results(x, n0=, n=, alpha=, batch_size=)``.
* peer:    Cohen et al.'s ``Smooth.certify`` (locuslab/smoothing, code/core.py) re-implemented in
           PyTorch on the same network, rebuilt with ``certifier_plugins.train.build_network`` and
           loaded with the ONNX file's weights (checked against onnxruntime before timing).
* noise:   not a contender: certify's view making alone (``certifier.noise.gaussian_views`` on the
           generators the engine makes, in its noise stream), one thread, the same number of samples.

Each round runs them one after another in an order that rotates from round to round, so slow
drifts of a busy machine hit all of them alike. The figures are the per-round ratios, their
median over rounds and their spread (lowest, highest, and the highest less the lowest over the
median), wall time and CPU time (all threads of the process: it moves little with the load when
both contenders keep the cores busy), with the load average at the start of every round.
The decision figure is the median of certify/pinned.
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

from benchlib import Report, benchmark_parser, check_counts, load_average, load_averages, medians, spread

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "fmnist-rs-0.25.onnx"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion_mnist.npz"
CONTENDERS = ("pinned", "bare", "certify", "peer", "noise")
#: the ratios each round reports: (numerator, denominator)
RATIOS = {"certify/pinned": ("certify", "pinned"), "certify/bare": ("certify", "bare"),
          "pinned/bare": ("pinned", "bare"), "peer/certify": ("peer", "certify")}
#: aims: certify within 10% of the limit (then at it), the peer at least 3x slower
AIMS = {"certify/pinned": ("<=", 1.1), "certify/bare": ("<=", 1.1), "peer/certify": (">=", 3.0)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, model=DEFAULT_MODEL, data=DEFAULT_DATA, inputs=3, rounds=7,
                              inputs_help="first K test images", data_help=".npz with x_test (uint8 images) and y_test")
    parser.add_argument("--sigma", type=float, default=None, help="noise level (default: the model's metadata)")
    parser.add_argument("--no-peer", action="store_true", help="leave out the PyTorch peer (and peer/certify)")
    parser.add_argument("--also-stream", type=int, metavar="N", action="append", default=[],
                        help="also time certify drawing noise stream N (e.g. 1, the views before streams "
                             "were numbered), as contender streamN")
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


def noise_stream_of() -> int:
    """The noise stream certify draws (1 in versions before streams were numbered)."""
    try:
        from certifier.noise import NOISE_STREAM
    except ImportError:
        return 1
    return NOISE_STREAM


def batch_generator(seed: np.random.SeedSequence, stream: int) -> np.random.Generator:
    """One batch's generator, as the engine makes it."""
    try:
        from certifier.noise import stream_generator
    except ImportError:  # before streams were numbered
        return np.random.Generator(np.random.PCG64(seed))
    return stream_generator(seed, stream)


def batch_sizes(count: int, batch_size: int) -> list[int]:
    return [min(batch_size, count - start) for start in range(0, count, batch_size)]


class Bench:
    def __init__(self, args, run, images: np.ndarray, network, batch_size: int):
        import onnxruntime

        self.args, self.run, self.images, self.batch_size = args, run, images, batch_size
        self.model = run.model
        self.sigma = float(run.method.sigma)
        if network is not None:  # the peer runs
            import torch

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
        # certify's own session options (threads per run, graph optimizations), in a session of its own
        self.pinned_session = onnxruntime.InferenceSession(str(self.model.path),
                                                           self.model.session.get_session_options(),
                                                           providers=self.model.providers)

    def schedule(self, n: int) -> list[int]:
        """Batch sizes certify runs for one input: selection, then estimation."""
        return batch_sizes(self.args.n0, self.batch_size) + batch_sizes(n, self.batch_size)

    def premade_batch(self, size: int) -> np.ndarray:
        if size not in self.premade:
            self.premade[size] = self.premade[self.batch_size][:size].copy()
        return self.premade[size]

    def _premade(self, session, runs: int, n: int) -> dict:
        """The premade batches of each input on ``session``, ``runs`` at a time."""
        from concurrent.futures import ThreadPoolExecutor

        input_name, output = self.model.input_name, [self.model.output.name]
        batches = [self.premade_batch(size) for size in self.schedule(n)]
        seconds = []
        with ThreadPoolExecutor(runs) as pool:
            for _ in self.images:
                start = time.perf_counter()
                if runs == 1:
                    for batch in batches:
                        session.run(output, {input_name: batch})
                else:
                    list(pool.map(lambda batch: session.run(output, {input_name: batch}), batches))
                seconds.append(time.perf_counter() - start)
        return {"seconds": seconds}

    def bare(self, round_number: int, n: int) -> dict:
        return self._premade(self.bare_session, 1, n)

    def pinned(self, round_number: int, n: int) -> dict:
        return self._premade(self.pinned_session, self.model.parallel_runs, n)

    def certify(self, round_number: int, n: int, **settings) -> dict:
        args = self.args
        seconds, predictions, radii, p_lowers, top_votes = [], [], [], [], []
        start = time.perf_counter()
        for result in self.run.results(self.images, n0=args.n0, n=n, alpha=args.alpha,
                                       batch_size=self.batch_size, seed=round_number, **settings):
            now = time.perf_counter()
            seconds.append(now - start)  # the first one includes the engine's setup
            start = now
            predictions.append(-1 if result.prediction is None else int(result.prediction))
            radii.append(float(result.radius))
            p_lowers.append(float(result.details.get("p_lower", float("nan"))))
            top_votes.append(int(result.details.get("top_votes", -1)))
        return {"seconds": seconds, "predictions": predictions, "radii": radii,
                "p_lower": p_lowers, "top_votes": top_votes}

    def stream(self, number: int):
        """certify drawing noise stream ``number`` (``results(..., noise_stream=number)``)."""
        return lambda round_number, n: self.certify(round_number, n, noise_stream=number)

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

    def noise(self, round_number: int, n: int) -> dict:
        """certify's view making alone, in this thread: one generator per batch as the engine
        makes them (its noise stream), then certifier.noise.gaussian_views on the broadcast input."""
        from certifier.noise import gaussian_views

        schedule, seconds, stream = self.schedule(n), [], noise_stream_of()
        for index, x in enumerate(self.images):
            start = time.perf_counter()
            for batch, size in enumerate(schedule):
                seed = np.random.SeedSequence(round_number, spawn_key=(index, 1, 0, batch))
                rng = batch_generator(seed, stream)
                gaussian_views(np.broadcast_to(x, (size,) + x.shape), self.sigma, rng)
            seconds.append(time.perf_counter() - start)
        return {"seconds": seconds}

    def contender(self, name: str):
        if name.startswith("stream"):
            return self.stream(int(name[len("stream"):]))
        return {"pinned": self.pinned, "bare": self.bare, "certify": self.certify, "peer": self.peer_run,
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


def thread_report(model, peer: bool) -> dict:
    options = model.session.get_session_options()
    report = {
        "cores": os.cpu_count(),
        "certify_runs_side_by_side": model.parallel_runs,
        "certify_intra_op_threads_per_run": options.intra_op_num_threads,
        "pinned_runs_side_by_side": model.parallel_runs,
        "pinned_intra_op_threads_per_run": options.intra_op_num_threads,
        "bare_intra_op_threads": 0,
    }
    if peer:
        import torch

        report |= {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}
    return report


def agreement_report(say, args, rounds: list[dict], labels, sigma: float) -> tuple[bool, list[dict]]:
    """Certify and the peer: the same predictions, radii within sampling error (they draw different noise)."""
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
    return all(a["ok"] for a in agreement), agreement


def main(argv=None) -> int:
    args = parse_args(argv)
    report = Report(args.json)
    say = report.say

    began = time.perf_counter()
    import onnxruntime

    import certifier

    stream = noise_stream_of()

    peer = not args.no_peer
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
    network = None
    if peer:
        import torch

        network, width, unused = torch_network(args.model, input_shape, model.num_classes)
        difference = check_same_network(network, model, images, sigma)
    threads = thread_report(model, peer)
    streams = tuple(f"stream{number}" for number in dict.fromkeys(args.also_stream))
    contenders = tuple(c for c in CONTENDERS if peer or c != "peer") + streams
    ratios = RATIOS | {f"{name}/pinned": (name, "pinned") for name in streams}
    ratio_names = [k for k, (a, b) in ratios.items() if a in contenders and b in contenders]

    say(f"RS benchmark: {args.model.name} (sha256 {model.sha256[:12]}), sigma {sigma:g}, "
        f"{model.num_classes} classes" + (f", build_network width {width}" if peer else ""))
    say(f"  inputs: {args.data.name} x_test[0:{args.inputs}], labels {labels.tolist()}; n0 {args.n0}, "
        f"n {args.n}, alpha {args.alpha:g}, batch {batch_size}"
        f"{' (certify auto)' if args.batch_size is None else ''}, rounds {args.rounds}, noise stream {stream}")
    say(f"  threads: certify and pinned: {threads['certify_runs_side_by_side']} runs side by side, "
        f"{threads['certify_intra_op_threads_per_run']} intra-op thread(s) each; bare: one run at a time, default "
        f"intra-op threads (one per physical core)"
        + (f"; torch {threads['torch_threads']} (default)" if peer else "") + f"; cores {threads['cores']}")
    say(f"  versions: python {platform.python_version()}, numpy {np.__version__}, onnxruntime "
        f"{onnxruntime.__version__} {model.providers[0]}" + (f", torch {torch.__version__}" if peer else ""))
    if peer:
        say(f"  peer check: torch logits == onnxruntime logits on {4 * args.inputs} views "
            f"(max |diff| {difference:.2g}){'; unused initializers ' + str(unused) if unused else ''}")
    say(f"  load average before: {load_average()}")

    bench = Bench(args, run, images, network, batch_size)
    # Warm-up: thread pools, kernels and lazy imports, with one estimation batch.
    for name in contenders:
        bench.contender(name)(10_000, batch_size)

    samples = args.n0 + args.n
    rounds = []
    say()
    say(f"seconds per certified input ({samples} samples each), wall time; ... cpu: the ratio of CPU seconds "
        f"(all threads); noise = certify's view making alone, 1 thread")
    columns = "".join(f"{c:>9}" for c in contenders) + "".join(f"{k:>15}" for k in ratio_names)
    cpu_names = [f"{name}/pinned cpu" for name in ("certify", *streams)]
    say(f"{'round':>5} {'load':>5}  {'order':<34}{columns}" + "".join(f"{k.replace('/pinned', '/p'):>15}"
                                                              for k in cpu_names))
    for number in range(args.rounds):
        shift = number % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        load = load_averages()
        measured, cpu = {}, {}
        for name in order:
            started = time.process_time()
            measured[name] = bench.contender(name)(number, args.n)
            cpu[name] = (time.process_time() - started) / len(images)
            time.sleep(0.2)  # let the previous contender's spinning threads go idle
        per_input = {name: sum(m["seconds"]) / len(m["seconds"]) for name, m in measured.items()}
        figures = {k: per_input[ratios[k][0]] / per_input[ratios[k][1]] for k in ratio_names}
        figures |= {f"{name}/pinned cpu": cpu[name] / cpu["pinned"] for name in ("certify", *streams)}
        rounds.append({"order": list(order), "load_average": load, "per_input_seconds": per_input,
                       "per_input_cpu_seconds": cpu, "ratios": figures, "detail": measured})
        say(f"{number + 1:>5} {load[0] if load else float('nan'):>5.2f}  {','.join(order):<34}"
            + "".join(f"{per_input[c]:>9.3f}" for c in contenders)
            + "".join(f"{figures[k]:>15.3f}" for k in [*ratio_names, *cpu_names]))

    median_seconds = medians([r["per_input_seconds"] for r in rounds], contenders)
    figures = {k: spread([r["ratios"][k] for r in rounds]) for k in [*ratio_names, *cpu_names]}
    say(f"{'median':>5} {'':>5}  {'':<34}" + "".join(f"{median_seconds[c]:>9.3f}" for c in contenders)
        + "".join(f"{figures[k]['median']:>15.3f}" for k in ratio_names)
        + "".join(f"{figures[k]['median']:>15.3f}" for k in cpu_names))
    say()
    say(f"ratios over {args.rounds} rounds: median [lowest, highest] (quartiles), (highest - lowest) / median")
    for key, figure in figures.items():
        say(f"  {key:<20} {figure['median']:.3f} [{figure['low']:.3f}, {figure['high']:.3f}] "
            f"({figure['q1']:.3f}-{figure['q3']:.3f}), {100 * figure['relative_range']:.1f}%")
    aims = {}
    for key, (sense, bound) in AIMS.items():
        if key in figures:
            median = figures[key]["median"]
            aims[key] = median <= bound if sense == "<=" else median >= bound
    say("aims: " + "; ".join(f"{key} {AIMS[key][0]} {AIMS[key][1]:g}: {'met' if met else 'NOT met'}"
                             for key, met in aims.items()) + " (decision figure: certify/pinned)")

    pinned, bare, views, cert = (median_seconds[c] for c in ("pinned", "bare", "noise", "certify"))
    runs = model.parallel_runs
    say()
    say("where certify's time goes (medians, s/input):")
    say(f"  pinned (the batches alone, {runs} side by side) {pinned:.3f} ({pinned / bare:.3f}x bare); views alone "
        f"{views:.3f} on 1 thread, {views / runs:.3f} spread over {runs}; sum {pinned + views / runs:.3f}; "
        f"certify {cert:.3f}")
    say(f"  gap to pinned {cert - pinned:+.3f} s = {100 * (cert - pinned) / pinned:.1f}% of it; views alone are "
        f"{100 * views / runs / pinned:.1f}% of it spread over {runs} "
        f"({1e9 * views / (samples * int(np.prod(input_shape))):.2f} ns per value, 1 thread)")

    all_agree, agreement = agreement_report(say, args, rounds, labels, sigma) if peer else (True, [])
    say(f"load average after: {load_average()}; total {time.perf_counter() - began:.0f} s")

    if args.json:
        report.write_json({
            "model": str(args.model), "model_sha256": model.sha256, "sigma": sigma, "inputs": args.inputs,
            "n0": args.n0, "n": args.n, "alpha": args.alpha, "batch_size": batch_size, "rounds": args.rounds,
            "noise_stream": stream, "threads": threads, "median_seconds_per_input": median_seconds,
            "ratios": figures, "decision_figure": "certify/pinned", "aims_met": aims, "agreement_ok": all_agree,
            "agreement": agreement,
            "per_round": [{k: v for k, v in r.items() if k != "detail"} | {"per_input_detail": {
                name: r["detail"][name]["seconds"] for name in contenders}} for r in rounds],
            "versions": {"python": platform.python_version(), "numpy": np.__version__,
                         "onnxruntime": onnxruntime.__version__,
                         **({"torch": torch.__version__} if peer else {})},
            "load_average_after": load_average(),
        })
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
