"""Results files (JSON lines or Cohen's TSV), resuming them, and summaries."""

from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import CertifyError
from .stats import round_down

#: Header fields that must match for a rerun to add to an existing results file.
IDENTITY_KEYS = (
    "mode", "plugin", "settings", "n0", "n", "alpha", "seed", "sampling", "model_sha256",
    "group_models", "output_name", "output_kind", "input_space", "data_sha256", "resize",
)
COHEN_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
FORMATS = ("jsonl", "cohen")


def _describe_difference(old: dict, new: dict) -> str:
    keys = [k for k in IDENTITY_KEYS if old.get(k) != new.get(k)]
    parts = []
    for key in keys[:3]:
        parts.append(f"{key} {json.dumps(old.get(key))} there, {json.dumps(new.get(key))} now")
    return "; ".join(parts)


class ResultsFile:
    """An append-only results file that a rerun resumes.

    Every finished input is written and flushed at once, so an interrupted run
    loses only the input in progress.
    """

    def __init__(self, path: str | os.PathLike, header: dict[str, Any], fmt: str = "jsonl"):
        if fmt not in FORMATS:
            raise CertifyError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.path = Path(path)
        self.format = fmt
        # JSON round trip: the header read back from the file has lists where this one has tuples.
        self.header = json.loads(json.dumps(header))
        self.header_path = self.path.with_name(self.path.name + ".header.json") if fmt == "cohen" else self.path
        self.done: dict[int, dict] = {}
        self._handle = None
        self._open()

    # -- opening and resuming ------------------------------------------------

    def _open(self) -> None:
        existing = self._holds_results()
        if existing:
            # Nothing in the file changes until it is known to hold results for these settings.
            old_header = self._read_header()
            if any(old_header.get(k) != self.header.get(k) for k in IDENTITY_KEYS):
                raise CertifyError(
                    f"{self.path} holds results for other settings ({_describe_difference(old_header, self.header)}); "
                    f"choose another --output or remove the file"
                )
            _drop_partial_line(self.path)
            records = read_results(self.path)[1] if self.format == "jsonl" else read_cohen(self.path)
            self.done = {r["index"]: r for r in records}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        except OSError as error:
            raise CertifyError(f"cannot write results to {self.path}: {error.strerror}") from None
        if not existing:
            if self.format == "jsonl":
                self._write_line(json.dumps({"type": "header", **self.header}))
            else:
                self.header_path.write_text(json.dumps(self.header, indent=1) + "\n")
                self._write_line("\t".join(COHEN_COLUMNS))

    def _holds_results(self) -> bool:
        """Whether there is a header to resume from; a header torn by a kill is dropped."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return False
        with open(self.path, "rb") as handle:
            first = handle.readline()
        if not first.endswith(b"\n"):
            start = (json.dumps({"type": "header"})[:-1] if self.format == "jsonl" else "\t".join(COHEN_COLUMNS)).encode()
            if start.startswith(first) or first.startswith(start):
                self.path.write_bytes(b"")
                return False
        return True

    def _read_header(self) -> dict:
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
        if self.format == "jsonl":
            try:
                header = json.loads(first)
            except json.JSONDecodeError:
                header = None
            if not isinstance(header, dict) or header.get("type") != "header":
                raise CertifyError(
                    f"{self.path} exists and is not a certify results file; choose another --output or remove the file"
                )
            return header
        if first.rstrip("\n").split("\t") != list(COHEN_COLUMNS):
            raise CertifyError(
                f"{self.path} exists and is not a Cohen-format results file; choose another --output or remove the file"
            )
        if not self.header_path.exists():
            raise CertifyError(
                f"{self.path} exists but {self.header_path.name} (its settings) is missing; "
                f"choose another --output or remove the file"
            )
        try:
            return json.loads(self.header_path.read_text())
        except json.JSONDecodeError:
            raise CertifyError(
                f"{self.header_path} (the settings of {self.path.name}) is not valid JSON; "
                f"choose another --output or remove both files"
            ) from None

    def _write_line(self, line: str) -> None:
        self._handle.write(line + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    # -- writing -------------------------------------------------------------

    def write(self, record: dict) -> None:
        self.done[record["index"]] = record
        if self.format == "jsonl":
            self._write_line(json.dumps(record, allow_nan=False))
        else:
            self._write_line(cohen_row(record))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _drop_partial_line(path: Path) -> None:
    """A run killed mid-write can leave half a line; drop it so the rerun redoes that input."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def cohen_row(record: dict) -> str:
    prediction = record["prediction"]
    label = record["label"]
    elapsed = str(datetime.timedelta(seconds=record["seconds"]))
    return "\t".join(
        [
            str(record["index"]),
            str(-1 if label is None else label),
            str(-1 if prediction is None else prediction),
            repr(float(record["radius"])),
            str(int(bool(record["correct"]))),
            elapsed,
        ]
    )


def read_cohen(path: Path) -> list[dict]:
    records = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].split("\t") != list(COHEN_COLUMNS):
        raise CertifyError(f"{path} is not a Cohen-format results file (expected the header {' '.join(COHEN_COLUMNS)})")
    for number, line in enumerate(lines[1:], 2):
        try:
            idx, label, predict, radius, correct, elapsed = line.split("\t")
            records.append(
                {
                    "index": int(idx),
                    "label": None if label == "-1" else int(label),
                    "prediction": None if predict == "-1" else int(predict),
                    "radius": float(radius),
                    "correct": bool(int(correct)) if label != "-1" else None,
                    "seconds": _parse_timedelta(elapsed),
                }
            )
        except ValueError:
            raise CertifyError(
                f"{path}, line {number}: expected the columns {' '.join(COHEN_COLUMNS)}; "
                f"is this a Cohen-format results file?"
            ) from None
    return records


def _parse_timedelta(text: str) -> float:
    """Seconds in ``str(datetime.timedelta)``: "H:MM:SS.ffffff" or "D day(s), H:MM:SS"."""
    days = 0
    if "day" in text:
        count, text = text.split(" day", 1)
        days, text = int(count), text.split(", ", 1)[1]
    hours, minutes, seconds = text.split(":")
    return days * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def read_results(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """Header and result records of a JSON-lines results file (later duplicates win)."""
    path = Path(path)
    if not path.exists():
        raise CertifyError(f"results file not found: {path}")
    header = None
    records: dict[int, dict] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if not line.endswith("\n") and number > 1:
                    break  # half-written last line of a killed run
                raise CertifyError(f"{path}, line {number}: not valid JSON; is this a certify results file?") from None
            if number == 1:
                if not isinstance(record, dict) or record.get("type") != "header":
                    raise CertifyError(f"{path} is not a certify results file (its first line is not a header)")
                header = record
            elif isinstance(record, dict) and record.get("type") == "result" and "index" in record:
                records[record["index"]] = record
    if header is None:
        raise CertifyError(f"{path} is empty")
    return header, [records[i] for i in sorted(records)]


def load_any_results(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """Read a JSON-lines or Cohen TSV results file."""
    path = Path(path)
    if not path.exists():
        raise CertifyError(f"results file not found: {path}")
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = handle.readline()
    if first.startswith("idx\t"):
        sidecar = path.with_name(path.name + ".header.json")
        header = json.loads(sidecar.read_text()) if sidecar.exists() else {"plugin": "?", "norm": "?"}
        return header, read_cohen(path)
    return read_results(path)


# -- summaries -----------------------------------------------------------------


def summarize(records: Sequence[dict], radii: Iterable[float] = DEFAULT_RADII, header: dict | None = None) -> dict:
    """Certified accuracy at each radius, ACR, abstain rate, cost per input."""
    header = header or {}
    radii = list(radii)
    count = len(records)
    labeled = [r for r in records if r.get("label") is not None]
    abstained = sum(1 for r in records if r.get("prediction") is None)
    summary: dict[str, Any] = {
        "plugin": header.get("plugin"),
        "norm": header.get("norm") or (records[0].get("norm") if records else None),
        "sigma": (header.get("settings") or {}).get("sigma"),
        "inputs": count,
        "labeled": len(labeled),
        "abstain_rate": abstained / count if count else math.nan,
        "seconds_per_input": sum(r.get("seconds", 0.0) for r in records) / count if count else math.nan,
        "forward_passes_per_input": (
            sum(r.get("forward_passes", 0) for r in records) / count if count and "forward_passes" in records[0] else None
        ),
        "radius_ceiling": header.get("radius_ceiling"),
        "exact": bool(header.get("exact", False)),
        "conditional": sorted({r["conditional"] for r in records if r.get("conditional")}),
    }
    if labeled:
        def certified(radius: float) -> float:
            return sum(1 for r in labeled if r.get("correct") and r["radius"] >= radius) / len(labeled)

        summary["certified_accuracy"] = {str(r): certified(r) for r in radii}
        summary["acr"] = sum(r["radius"] for r in labeled if r.get("correct")) / len(labeled)
        summary["accuracy"] = sum(1 for r in labeled if r.get("correct")) / len(labeled)
    else:
        summary["certified_fraction"] = {
            str(r): sum(1 for x in records if x.get("prediction") is not None and x["radius"] >= r) / count
            for r in radii
        } if count else {}
    return summary


def format_summary(summaries: Sequence[dict], names: Sequence[str]) -> str:
    """A side-by-side table of one or more summaries."""
    width = max(12, *(len(n) for n in names)) + 2
    lines = ["".ljust(30) + "".join(n.rjust(width) for n in names)]

    def row(label: str, values: Sequence[str]) -> None:
        lines.append(label.ljust(30) + "".join(v.rjust(width) for v in values))

    def pct(value) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"

    row("plugin", [str(s.get("plugin")) for s in summaries])
    row("norm", [str(s.get("norm")) for s in summaries])
    row("sigma", [str(s.get("sigma")) for s in summaries])
    row("inputs (labeled)", [f"{s['inputs']} ({s['labeled']})" for s in summaries])
    keys = []
    for s in summaries:
        for key in s.get("certified_accuracy") or s.get("certified_fraction") or {}:
            if key not in keys:
                keys.append(key)
    accuracy = any("certified_accuracy" in s for s in summaries)
    for key in sorted(keys, key=float):
        label = f"certified accuracy r >= {key}" if accuracy else f"certified r >= {key}"
        row(label, [pct((s.get("certified_accuracy") or s.get("certified_fraction") or {}).get(key)) for s in summaries])
    row("ACR", [("-" if "acr" not in s else f"{round_down(s['acr'], 4):.4f}") for s in summaries])
    row("abstain rate", [pct(s["abstain_rate"]) for s in summaries])
    row("radius ceiling", [
        "-" if s.get("radius_ceiling") is None else f"{round_down(s['radius_ceiling'], 4):.4f}" for s in summaries
    ])
    row("seconds per input", [f"{s['seconds_per_input']:.3f}" for s in summaries])
    row("forward passes per input", [
        "-" if s.get("forward_passes_per_input") is None else f"{s['forward_passes_per_input']:.0f}" for s in summaries
    ])
    for s, name in zip(summaries, names):
        if s.get("exact"):
            lines.append(f"{name}: certificates are exact (no sampling, no alpha)")
        if s.get("conditional"):
            lines.append(f"{name}: radii are CONDITIONAL on: {', '.join(s['conditional'])}")
    return "\n".join(lines)


def plot_summaries(runs: Sequence[tuple[str, list[dict]]], path: str | os.PathLike) -> None:
    """Certified accuracy against radius, one curve per run (certified fraction for a run without labels)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CertifyError("--plot needs matplotlib: pip install 'onnx-certifier[plot]'") from None
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, records in runs:
        labeled = [r for r in records if r.get("label") is not None]
        if labeled:
            counted, good = labeled, [r for r in labeled if r.get("correct")]
        else:
            counted, good = records, [r for r in records if r.get("prediction") is not None]
            name += " (no labels: certified fraction)"
        if not counted:
            continue
        radii = sorted({0.0} | {r["radius"] for r in good})
        top = max(radii) * 1.05 + 1e-9
        grid = [i * top / 400 for i in range(401)]
        values = [sum(1 for r in good if r["radius"] >= g) / len(counted) for g in grid]
        axes.plot(grid, values, label=name, drawstyle="steps-post")
    axes.set_xlabel("radius")
    axes.set_ylabel("certified accuracy")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
