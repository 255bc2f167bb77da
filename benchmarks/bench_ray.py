"""What --ray costs: two local Ray actors against the local engine on the same cores, the
per-input dispatch cost, and the throughput that projects to N GPU workers. One process.

Command (from the repository root, with the project's venv and Ray installed; about 2 minutes
on a quiet 2-core machine):

    python benchmarks/bench_ray.py

which is the same as

    python benchmarks/bench_ray.py --model models/fmnist-rs-0.25.onnx --inputs 4 -n 100000 --n0 100 \\
        --rounds 1 --tiny-inputs 300 --cpus 2 --seconds-per-input 110

1. overhead: the first K bundled Fashion-MNIST samples certified at n (rs, the model's sigma)
   by the local engine (``--threads`` = CPUS: CPUS single-threaded batches side by side) and by
   CPUS single-threaded Ray actors on a Ray instance of CPUS CPUs started here; the ratio of
   wall times, job against job (the actors' start, opening the model, included; Ray's own
   start is printed apart: it happens once per command). Records are checked equal.
2. dispatch: a 4-feature linear model, n0 = n = 1, TINY inputs: the engine's work is nothing,
   so what the actors spend per input beyond the engine's own seconds is Ray's cost per input
   (a call, its arguments and result through the object store); the driver's CPU time per
   input is what bounds the number of workers one driver can feed.
3. projection: N GPU workers, each certifying one input in SECONDS (Cohen et al.: about 110 s
   per ImageNet image at n = 100,000 on one V100), each input costing an actor the dispatch
   cost on top: N / (SECONDS + dispatch) inputs per second, until the driver's CPU per input
   is the limit.

Add ``--json PATH`` (``-`` for stdout) for a machine-readable summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import certifier  # noqa: E402
from benchlib import Report, benchmark_parser, check_counts, load_average, timed  # noqa: E402
from certifier.ray_executor import RayExecutor  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "fmnist-rs-0.25.onnx"
DEFAULT_DATA = ROOT / "models" / "fmnist-samples.npz"


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, model=DEFAULT_MODEL, data=DEFAULT_DATA, inputs=4, alpha=None, batch_size=False,
                              rounds=1, inputs_help="inputs certified at n")
    parser.add_argument("--tiny-inputs", type=int, default=300,
                        help="inputs of the dispatch run (default: %(default)s)")
    parser.add_argument("--cpus", type=int, default=2, help="cores for both contenders (default: %(default)s)")
    parser.add_argument("--seconds-per-input", type=float, default=110.0,
                        help="one GPU worker's seconds per input, for the projection (default: %(default)s, "
                             "Cohen et al.'s ImageNet figure at n = 100,000 on one V100)")
    return check_counts(parser, parser.parse_args(argv), ("inputs", "n", "n0", "rounds", "tiny_inputs", "cpus"))


def timed_job(run, data, executor=None, **settings) -> tuple[float, list]:
    def certify() -> list:
        with run.job(data, executor=executor, **settings) as job:
            return list(job)

    return timed(certify)


def same_records(a, b) -> bool:
    key = lambda r: (r.index, r.prediction, r.radius, r.details, r.forward_passes)  # noqa: E731
    return [key(r) for r in a] == [key(r) for r in b]


def tiny_model(folder: Path) -> tuple[Path, Path]:
    """A 4-feature, 3-class linear model and 4-feature inputs: the engine has nothing to do."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["z"]), helper.make_node("Add", ["z", "b"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W"),
         numpy_helper.from_array(np.zeros(3, np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, folder / "tiny.onnx")
    np.savez(folder / "tiny.npz", x=rng.random((4096, 4)).astype(np.float32))
    return folder / "tiny.onnx", folder / "tiny.npz"


def main(argv=None) -> int:
    args = parse_args(argv)
    report = Report(args.json)
    say = report.say
    import onnxruntime
    import ray

    say(f"certifier {certifier.__version__}, onnxruntime {onnxruntime.__version__}, ray {ray.__version__}, "
        f"{os.cpu_count()} cores; load average before: {load_average()}")
    started = time.perf_counter()
    executor = RayExecutor("local", device="cpu", threads=1, num_cpus=args.cpus, note=lambda m: say(f"  ray: {m}"))
    ray_start = time.perf_counter() - started
    executor.wait_started(timeout=300)  # a long run's actors are started: time the jobs alone
    actors_start = time.perf_counter() - started - ray_start
    summary: dict = {"load_average_before": load_average(), "ray_start_seconds": ray_start,
                     "actors_start_seconds": actors_start, "cpus": args.cpus}
    try:
        # 1. overhead on the same cores at n
        say(f"\n1. {args.inputs} inputs, n0 = {args.n0}, n = {args.n}: local engine (--threads {args.cpus}) "
            f"against {executor.plan.actors} Ray actors of 1 CPU")
        local_run = certifier.load(args.model, plugin="rs", device="cpu", threads=args.cpus)
        ray_run = certifier.load(args.model, plugin="rs", device="cpu", threads=1)
        settings = dict(limit=args.inputs, n0=args.n0, n=args.n, seed=0)
        local_run.certify(args.data, indices=[0], n0=10, n=100)  # warm-up
        ratios, rows = [], []
        for round_number in range(args.rounds):
            order = ("local", "ray") if round_number % 2 == 0 else ("ray", "local")
            seconds = {}
            for contender in order:
                if contender == "local":
                    seconds["local"], local = timed_job(local_run, args.data, **settings)
                else:
                    seconds["ray"], remote = timed_job(ray_run, args.data, executor=executor, **settings)
                    seconds["actors_start"] = executor.startup_seconds or float("nan")
            if not same_records(local, remote):
                say("  records differ between the local and the Ray run")
                return 1
            ratios.append(seconds["ray"] / seconds["local"])
            rows.append(seconds)
            say(f"  round {round_number + 1}: local {seconds['local']:.2f} s, ray {seconds['ray']:.2f} s "
                f"(of which the actors opening the model {seconds['actors_start']:.2f} s): ratio {ratios[-1]:.3f}")
        ratio = float(np.median(ratios))
        say(f"  ray / local = {ratio:.3f} (median of {len(ratios)}); records equal; once per command: Ray's "
            f"start {ray_start:.1f} s, then the actors' {actors_start:.1f} s (importing their libraries, while the "
            f"driver opens the model)")
        command = [(r["ray"] + ray_start + actors_start) / r["local"] for r in rows]
        say(f"  counting Ray's start too (one command certifying these inputs): {float(np.median(command)):.3f}")
        summary["overhead_ratio_with_ray_start"] = float(np.median(command))
        summary.update(overhead_ratio=ratio, overhead_rounds=rows)

        # 2. per-input dispatch cost: two job sizes, so the actors' start drops out of the difference
        with tempfile.TemporaryDirectory() as folder:
            model, data = tiny_model(Path(folder))
            small, large = max(1, args.tiny_inputs // 6), min(args.tiny_inputs, 4096)
            tiny = certifier.load(model, plugin="rs", sigma=0.1, device="cpu", threads=1)
            local_seconds, _ = timed_job(tiny, data, limit=large, n0=1, n=1, seed=0)
            measured = {}
            for count in (small, large):
                cpu_before = time.process_time()
                wall, results = timed_job(tiny, data, executor=executor, limit=count, n0=1, n=1, seed=0)
                measured[count] = (wall, time.process_time() - cpu_before, results)
        actors = executor.plan.actors
        extra = large - small
        wall_ms = 1000 * (measured[large][0] - measured[small][0]) / extra
        driver_ms = 1000 * (measured[large][1] - measured[small][1]) / extra
        engine_ms = 1000 * float(np.median([r.seconds for r in measured[large][2]]))
        dispatch_ms = max(0.0, wall_ms * actors - engine_ms)
        say(f"\n2. dispatch: jobs of {small} and {large} inputs of a 4-feature model, n0 = n = 1 "
            f"(per input: the difference over the {extra} extra inputs)")
        say(f"  local engine {1000 * local_seconds / large:.2f} ms per input; Ray {wall_ms:.2f} ms per input "
            f"with {actors} actors, of which the engine's own part {engine_ms:.2f} ms per input on an actor")
        say(f"  dispatch cost per input (an actor's time beyond the engine): {dispatch_ms:.2f} ms; the driver's "
            f"CPU per input: {driver_ms:.2f} ms")
        summary.update(dispatch_ms=dispatch_ms, driver_cpu_ms=driver_ms, tiny_local_ms=1000 * local_seconds / large,
                       tiny_ray_ms=wall_ms, tiny_engine_ms=engine_ms)

        # 3. projection
        seconds = args.seconds_per_input
        per_input = seconds + dispatch_ms / 1000
        driver_limit = 1000 / driver_ms if driver_ms > 0 else float("inf")
        say(f"\n3. projection: {seconds:g} s per input on one GPU worker (+{dispatch_ms:.1f} ms dispatch); "
            f"the driver feeds at most {driver_limit:,.0f} inputs/s")
        say(f"  {'GPU workers':>11}  {'inputs/hour':>12}  {'efficiency':>10}")
        projection = []
        for workers in (1, 8, 64, 512, 4096):
            rate = min(workers / per_input, driver_limit)
            projection.append({"workers": workers, "inputs_per_hour": 3600 * rate,
                               "efficiency": rate * seconds / workers})
            say(f"  {workers:>11}  {3600 * rate:>12,.0f}  {rate * seconds / workers:>10.4f}")
        summary["projection"] = projection
        summary["driver_limit_workers"] = driver_limit * per_input
        say(f"  one driver keeps up to about {driver_limit * per_input:,.0f} such workers busy")
    finally:
        executor.close()
    summary["load_average_after"] = load_average()
    say(f"\nload average after: {summary['load_average_after']}")
    report.write_json(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
