"""What the benchmark scripts share: their common arguments (with certify's own defaults), where
their report goes, JSON summaries, timing, medians and the load average.

    from benchlib import Report, benchmark_parser, load_average, timed

    parser = benchmark_parser(__doc__, model=DEFAULT_MODEL, data=DEFAULT_DATA, inputs=3)
    args = parser.parse_args(argv)
    report = Report(args.json)
    report.say(f"load average before: {load_average()}")
    seconds, results = timed(run.certify, images, n=args.n)
    report.write_json({...})
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from certifier import JobSettings

_DEFAULTS = JobSettings()


def benchmark_parser(doc: str, *, model: Path | None = None, data: Path | None = None, inputs: int | None = None,
                     n: int = _DEFAULTS.n, n0: int = _DEFAULTS.n0, alpha: float | None = _DEFAULTS.alpha,
                     batch_size: bool = True, rounds: int | None = 3, json_summary: bool = True,
                     data_help: str = "inputs", inputs_help: str = "inputs certified") -> argparse.ArgumentParser:
    """An argument parser with the options benchmarks share (each left out when its default is None
    or False): --model, --data, --inputs/-k, -n, --n0, --alpha, --batch-size, --rounds, --json.
    The sample defaults are certify's own (``certifier.JobSettings``) unless a script asks for others;
    :func:`check_counts` refuses counts below 1 after parsing."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if model is not None:
        parser.add_argument("--model", type=Path, default=model, help="ONNX model (default: %(default)s)")
    if data is not None:
        parser.add_argument("--data", type=Path, default=data, help=f"{data_help} (default: %(default)s)")
    if inputs is not None:
        parser.add_argument("--inputs", "-k", type=int, default=inputs, help=f"{inputs_help} (default: %(default)s)")
    parser.add_argument("-n", type=int, default=n, help="estimation samples (default: %(default)s)")
    parser.add_argument("--n0", type=int, default=n0, help="selection samples (default: %(default)s)")
    if alpha is not None:
        parser.add_argument("--alpha", type=float, default=alpha, help="failure probability (default: %(default)s)")
    if batch_size:
        parser.add_argument("--batch-size", type=int, default=None,
                            help="batch size for all contenders (default: certify's automatic size)")
    if rounds is not None:
        parser.add_argument("--rounds", type=int, default=rounds,
                            help="rounds of all contenders (default: %(default)s)")
    if json_summary:
        parser.add_argument("--json", metavar="PATH", help="also write a JSON summary to PATH ('-' for stdout)")
    return parser


def check_counts(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 names: Iterable[str] = ("inputs", "n", "n0", "rounds", "batch_size")) -> argparse.Namespace:
    """Refuse (as a usage error) any of these counts below 1; those not given (None) pass."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def load_average() -> str:
    """The 1, 5 and 15 minute load averages ("n/a" where the system has none)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


class Report:
    """Where a benchmark prints: stdout, or stderr when its JSON summary goes to stdout (``--json -``)."""

    def __init__(self, json_path: str | None = None):
        self.json_path = json_path
        self.out = sys.stderr if json_path == "-" else sys.stdout

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def write_json(self, summary: Mapping[str, Any]) -> None:
        """The summary as indented JSON, to ``--json``'s path or stdout; nothing without ``--json``."""
        if not self.json_path:
            return
        text = json.dumps(summary, indent=2)
        if self.json_path == "-":
            print(text)
        else:
            Path(self.json_path).write_text(text + "\n")


def timed(function: Callable, *args, **kwargs) -> tuple[float, Any]:
    """(seconds, result) of one call, on the monotonic performance clock."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def medians(rows: Sequence[Mapping[str, float]], keys: Iterable[str] | None = None) -> dict[str, float]:
    """The median of each key over rows (rounds): the figure a noisy machine settles on."""
    keys = list(keys) if keys is not None else list(rows[0])
    return {key: statistics.median(row[key] for row in rows) for key in keys}
