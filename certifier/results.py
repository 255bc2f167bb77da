"""Results files (JSON lines or Cohen's TSV): writing them as a run goes, resuming them, reading them."""

from __future__ import annotations

import datetime
import errno
import json
import math
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any, Callable

from .errors import CertifyError
from .header import IMPLIED_WHEN_ABSENT, INCIDENTAL_KEYS, settings_differ
from .noise import NOISE_STREAM

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, results files are not guarded against a second run
    fcntl = None

COHEN_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
FORMATS = ("jsonl", "cohen")
#: Headers are a few kilobytes; a first line longer than this is not one.
MAX_HEADER_BYTES = 1 << 20


def _without_batch_size(header: dict) -> dict:
    """A header without the batch size, in both places it may be (a sequential plan's looks fall on whole batches)."""
    header = {k: v for k, v in header.items() if k != "batch_size"}
    plan = header.get("sampling_settings")
    if isinstance(plan, dict):
        header["sampling_settings"] = {k: v for k, v in plan.items() if k != "granularity"}
    return header


def _recorded_batch_size(header: dict):
    if "batch_size" in header:
        return header["batch_size"]
    plan = header.get("sampling_settings")
    return plan.get("granularity") if isinstance(plan, dict) else None


def recorded_noise_stream(path: str | os.PathLike, fmt: str = "jsonl"):
    """The noise stream a results file at ``path`` was drawn with, so that resuming it draws the
    same views: 1 for a header without one, the one new runs draw when there is no header to read.
    The file's other settings are checked when it is opened (:class:`ResultsFile`)."""
    path = Path(path)
    try:
        if not path.is_file() or not path.stat().st_size:
            return NOISE_STREAM
        if fmt == "cohen":
            header = _read_json_dict(path.with_name(path.name + ".header.json"))
        else:
            with open(path, "rb") as handle:
                header = json.loads(handle.readline(MAX_HEADER_BYTES).decode("utf-8"), parse_int=_json_int)
            if not isinstance(header, dict) or header.get("type") != "header":
                header = None
    except (OSError, ValueError, RecursionError):
        return NOISE_STREAM
    if not isinstance(header, dict):
        return NOISE_STREAM
    return header.get("noise_stream", IMPLIED_WHEN_ABSENT["noise_stream"])


def _describe_difference(old: dict, new: dict) -> str:
    keys = settings_differ(old, new)
    parts = []
    for key in keys[:3]:
        implied = IMPLIED_WHEN_ABSENT.get(key)
        parts.append(f"{key} {json.dumps(old.get(key, implied))} there, {json.dumps(new.get(key, implied))} now")
    return "; ".join(parts)


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_index(value) -> bool:
    """A class number or input index: a non-negative integer (JSON true is not one)."""
    return _is_integer(value) and value >= 0


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_int(text: str) -> int | float:
    """A JSON integer as an int, or as +-inf when no float holds it, the way json reads 1e400:
    summaries compute in floats (and Python refuses to read an int of 4,300 digits)."""
    return int(text) if len(text.lstrip("-")) <= 308 else float(text)


def _plain(value):
    """json.dumps fallback: numpy scalars become Python numbers; anything else is refused."""
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "shape", None) == ():
        return item()
    raise TypeError(f"a {type(value).__name__}")


def _non_finite(value, where: str = "") -> tuple[str, Any] | None:
    """The first non-finite number in a JSON-like value, with where it is ("settings.sigma")."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        value = _plain(value) if getattr(value, "shape", None) == () else value
        if isinstance(value, float) and not math.isfinite(value):
            return where or "value", value
        return None
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def _dumps(value, path: Path, what: str) -> str:
    """Strict JSON (no NaN or Infinity: they are not JSON), or a one-line refusal."""
    try:
        return json.dumps(value, allow_nan=False, default=_plain)
    except ValueError:
        where, number = _non_finite(value) or ("a value", "not finite")
        raise CertifyError(
            f"not writing {what} to {path}: {where} is {number}, not a finite number; "
            f"check --sigma, --alpha, -n and the plugin options"
        ) from None
    except TypeError as error:
        raise CertifyError(f"not writing {what} to {path}: JSON cannot store {error}") from None


def _show(value, limit: int = 40) -> str:
    """A value as JSON for an error line, cut short when long."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= limit else text[:limit] + "..."


def _brief(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _record_problem(record) -> str | None:
    """What makes a result record malformed (a missing field, a wrong type), or None."""
    if not isinstance(record, dict):
        return "not a results record (expected a JSON object)"
    for key in ("index", "label", "prediction", "radius", "correct"):
        if key not in record:
            return f"the result has no {key!r}"
    for key in ("label", "prediction"):
        value = record[key]
        if value is not None and not is_index(value):
            return f"{key} {_show(value)} is not a class number (a non-negative integer) or null"
    if not is_number(record["radius"]):
        return f"radius {_show(record['radius'])} is not a number"
    if record["correct"] not in (True, False, None):
        return f"correct {_show(record['correct'])} is not true, false or null"
    for key in ("seconds", "forward_passes"):
        value = record.get(key)
        if value is not None and not (is_number(value) and math.isfinite(value) and value >= 0):
            return f"{key} {_show(value)} is not a non-negative number"
    return None


def _value_problem(record: dict) -> str | None:
    """What a reader flags but the writer refuses outright: a bad index or radius."""
    if not is_index(record["index"]):
        return f"index {_show(record['index'])} is not a non-negative integer"
    radius = record["radius"]
    if not (math.isfinite(radius) and radius >= 0):
        return f"radius {radius!r} is not a finite non-negative number"
    return None


def _oserror(error: OSError) -> str:
    return error.strerror or str(error)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte, then force them to disk (os.write may write part of a buffer)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def _size(fd: int) -> int:
    try:
        return os.fstat(fd).st_size
    except OSError:
        return -1


def _truncate_quietly(fd: int, size: int) -> None:
    """Take back a half-written line after a failed write; a rerun would drop it anyway."""
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


class ResultsFile:
    """An append-only results file that a rerun resumes.

    Every finished input is written and forced to disk at once, so an interrupted
    run loses only the input in progress. The file is locked for the whole run, so
    a second run on the same file refuses instead of writing every result again.
    Nothing in a file certify did not write is ever changed.
    """

    def __init__(self, path: str | os.PathLike, header: dict[str, Any], fmt: str = "jsonl", *,
                 record_type: str = "result", record_problem: Callable[[Any], str | None] | None = None):
        """``record_type`` and ``record_problem``: the records of another kind of run (``certify
        attack``'s), and what makes one malformed (None: a certify result's checks)."""
        if fmt not in FORMATS:
            raise CertifyError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.path = Path(path)
        self.format = fmt
        self.record_type, self.record_problem = record_type, record_problem
        # JSON round trip: the header read back from the file has lists where this one has tuples.
        self.header = json.loads(_dumps(header, self.path, "the header"))
        self.header_path = self.path.with_name(self.path.name + ".header.json") if fmt == "cohen" else self.path
        self.done: dict[int, dict] = {}
        self._fd: int | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- opening and resuming ------------------------------------------------

    def _open(self) -> None:
        self._fd = self._open_locked()
        if os.fstat(self._fd).st_size and self._holds_results():
            # Nothing in the file changes until it is known to hold results for these settings.
            old_header = self._read_header()
            differ = settings_differ(old_header, self.header)
            if differ and not settings_differ(_without_batch_size(old_header), _without_batch_size(self.header)):
                size = _recorded_batch_size(old_header)
                raise CertifyError(
                    f"{self.path} was written with --batch-size {size}, this run's is {self.header.get('batch_size')}: "
                    f"each batch's views come from their own noise stream, so another batch size gives other views; "
                    f"resume with --batch-size {size}"
                )
            if differ:
                raise CertifyError(
                    f"{self.path} holds results for other settings ({_describe_difference(old_header, self.header)}); "
                    f"choose another --output or remove the file"
                )
            try:
                _drop_partial_line(self._fd)
            except OSError as error:
                raise CertifyError(f"cannot resume {self.path}: {_oserror(error)}") from None
            records = (read_results(self.path, self.record_type, self.record_problem)[1] if self.format == "jsonl"
                       else read_cohen(self.path))
            self.done = {r["index"]: r for r in records if is_index(r["index"])}
        else:
            self._start()

    def _open_locked(self) -> int:
        """Open (creating if need be) and lock the file, or refuse in one line."""
        path = self.path
        if path.is_symlink() and not path.exists():
            raise CertifyError(
                f"--output {path} is a symbolic link to {os.readlink(path)}, which does not exist; "
                f"remove the link or choose another --output"
            )
        flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # O_EXCL: never follows a symbolic link planted after the check above.
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                fd = os.open(path, flags)
        except OSError as error:
            raise CertifyError(f"cannot write results to {path}: {_oserror(error)}; choose another --output") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CertifyError(f"--output {path} is not a regular file; choose another --output")
            self._lock(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _lock(self, fd: int) -> None:
        if fcntl is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CertifyError(
                f"{self.path} is in use by another certify run (it is locked); "
                f"wait for that run to end or choose another --output"
            ) from None
        except OSError as error:  # a file system without locks (some network mounts)
            warnings.warn(f"cannot lock {self.path} ({_oserror(error)}): do not start a second run on it at once")

    def _start(self) -> None:
        """Write the header of a new file (or of one whose header a kill tore)."""
        try:
            os.ftruncate(self._fd, 0)  # empty, or a torn header of ours: nothing to keep
            if self.format == "jsonl":
                _write_all(self._fd, (json.dumps({"type": "header", **self.header}) + "\n").encode())
            else:
                self._write_sidecar()
                _write_all(self._fd, ("\t".join(COHEN_COLUMNS) + "\n").encode())
        except OSError as error:
            _truncate_quietly(self._fd, 0)  # a rerun then starts afresh instead of finding a torn header
            raise CertifyError(f"cannot write the header of {self.path}: {_oserror(error)}") from None
        except BaseException:
            _truncate_quietly(self._fd, 0)
            raise

    def _write_sidecar(self) -> None:
        """The settings of a Cohen-format file, beside it; replaced in one step, never torn."""
        sidecar = self.header_path
        if sidecar.is_symlink() or sidecar.exists():
            if "model_sha256" not in (_read_json_dict(sidecar) or {}):
                raise CertifyError(
                    f"{sidecar} exists and is not a certify header; choose another --output or remove it"
                )
        temporary = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(self.header, indent=1) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, sidecar)
        except OSError as error:
            try:
                temporary.unlink(missing_ok=True)
            except OSError:
                pass
            raise CertifyError(f"cannot write {sidecar} (the settings of {self.path.name}): {_oserror(error)}") from None

    def _holds_results(self) -> bool:
        """Whether the file is to be resumed (or refused): all but a header of ours that a kill tore."""
        first = _first_line(self.path)
        if first.endswith(b"\n") or len(first) != _size(self._fd):
            return True  # a whole first line, or more than one line: never a torn header
        try:
            text = first.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return not self._is_torn_header(text)

    def _is_torn_header(self, text: str) -> bool:
        """Whether ``text`` (a whole file without a newline) can only be the start of a header
        that certify wrote for these settings before a kill: then it may be dropped.

        A JSON-lines header must match the one this run would write up to the fields that
        may differ between runs (version, paths, device, start time), and reach at least
        through the model's SHA-256, so a user's short file ("{") never qualifies. A Cohen
        column line must be a prefix of the columns, beside a settings file with these
        settings (certify writes that first).
        """
        if not text:
            return False
        if self.format == "cohen":
            sidecar = _read_json_dict(self.header_path)
            return (
                "\t".join(COHEN_COLUMNS).startswith(text)
                and sidecar is not None
                and not settings_differ(sidecar, self.header)
            )
        sha = self.header.get("model_sha256")
        if not isinstance(sha, str) or f'"model_sha256": {json.dumps(sha)}' not in text:
            return False
        return _matches_prefix(text, _header_pieces(self.header))

    def _read_header(self) -> dict:
        first = _first_line(self.path).decode("utf-8", errors="replace")
        if self.format == "jsonl":
            try:
                header = json.loads(first)
            except (json.JSONDecodeError, RecursionError):
                header = None
            if not isinstance(header, dict) or header.get("type") != "header":
                raise CertifyError(
                    f"{self.path} exists and is not a certify results file; choose another --output or remove it"
                )
            return header
        if first.rstrip("\n").split("\t") != list(COHEN_COLUMNS):
            raise CertifyError(
                f"{self.path} exists and is not a Cohen-format results file; choose another --output or remove it"
            )
        if not self.header_path.exists():
            raise CertifyError(
                f"{self.path} exists but {self.header_path.name} (its settings) is missing; "
                f"choose another --output or remove the file"
            )
        header = _read_json_dict(self.header_path)
        if header is None:
            raise CertifyError(
                f"{self.header_path} (the settings of {self.path.name}) is not a JSON object; "
                f"choose another --output or remove both files"
            )
        return header

    # -- writing -------------------------------------------------------------

    def write(self, record: dict) -> None:
        """Append one result and force it to disk, or refuse in one line (the file stays resumable)."""
        if self.record_problem is not None:
            problem = self.record_problem(record)
        else:
            problem = _record_problem(record) or _value_problem(record)
        if problem:
            raise CertifyError(f"not writing input {_show(record.get('index'))} to {self.path}: {problem}")
        if self.format == "jsonl":
            line = _dumps(record, self.path, f"input {record['index']}")
        else:
            line = cohen_row(record)
        try:
            size = os.fstat(self._fd).st_size
        except OSError as error:
            raise CertifyError(f"cannot write results to {self.path}: {_oserror(error)}") from None
        data = (line + "\n").encode()
        try:
            _write_all(self._fd, data)
        except OSError as error:
            _truncate_quietly(self._fd, size)
            hint = "free some space, then rerun" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "rerun"
            raise CertifyError(
                f"cannot write results to {self.path}: {_oserror(error)}; the {len(self.done)} results before "
                f"are kept: {hint} the same command to resume"
            ) from None
        except BaseException:
            # Ctrl-C or SIGTERM mid-write: the line is whole or taken back, and ``done`` says which.
            if _size(self._fd) == size + len(data):
                self.done[record["index"]] = record
            else:
                _truncate_quietly(self._fd, size)
            raise
        self.done[record["index"]] = record

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also releases the lock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _first_line(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.readline(MAX_HEADER_BYTES)
    except OSError as error:
        raise CertifyError(f"cannot read {path}: {_oserror(error)}") from None


def _read_json_dict(path: Path) -> dict | None:
    """A small JSON object file, or None when it is missing, unreadable, huge or not one."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_HEADER_BYTES + 1)
        value = json.loads(data.decode("utf-8"), parse_int=_json_int) if len(data) <= MAX_HEADER_BYTES else None
    except (OSError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_TORN_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*\\?')
_ANY = "\uffffany\uffff"


def _header_pieces(header: dict) -> list[str]:
    """The JSON-lines header this run writes, cut where an incidental string field may differ."""
    pattern = {"type": "header", **header}
    for key in INCIDENTAL_KEYS:
        if isinstance(pattern.get(key), str):
            pattern[key] = _ANY
    return json.dumps(pattern).split(json.dumps(_ANY))


def _matches_prefix(text: str, pieces: list[str]) -> bool:
    """Whether ``text`` is a prefix of the pieces joined by JSON strings (any content)."""
    position = 0
    for number, piece in enumerate(pieces):
        if number:
            if position == len(text):
                return True
            string = _JSON_STRING.match(text, position)
            if string is None:
                return _TORN_JSON_STRING.fullmatch(text, position) is not None
            position = string.end()
        rest = text[position:position + len(piece)]
        if not piece.startswith(rest):
            return False
        if len(rest) < len(piece):
            return position + len(rest) == len(text)
        position += len(piece)
    return position == len(text)


def _drop_partial_line(fd: int) -> None:
    """A run killed mid-write can leave half a line; drop it so the rerun redoes that input."""
    def read(start: int, count: int) -> bytes:
        os.lseek(fd, start, os.SEEK_SET)  # writes still append: the file is opened with O_APPEND
        return os.read(fd, count)

    end = os.fstat(fd).st_size
    if end == 0 or read(end - 1, 1) == b"\n":
        return
    while end > 0:
        start = max(0, end - (1 << 16))
        cut = read(start, end - start).rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return
        end = start


def cohen_row(record: dict) -> str:
    prediction = record["prediction"]
    label = record["label"]
    elapsed = str(datetime.timedelta(seconds=record.get("seconds") or 0.0))
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


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise CertifyError(f"cannot read {path}: {_oserror(error)}") from None


def read_cohen(path: str | os.PathLike) -> list[dict]:
    """The rows of a Cohen-format TSV as records (-1 means none); a half-written last row is skipped."""
    path = Path(path)
    text = _read_text(path)
    lines = text.splitlines()
    if not lines or lines[0].split("\t") != list(COHEN_COLUMNS):
        raise CertifyError(f"{path} is not a Cohen-format results file (expected the header {' '.join(COHEN_COLUMNS)})")
    records = []
    for number, line in enumerate(lines[1:], 2):
        try:
            records.append(_cohen_record(line))
        except ValueError as error:
            if number == len(lines) and not text.endswith("\n"):
                break  # half-written last line of a killed run
            raise CertifyError(f"{path}, line {number}: {error}") from None
    return records


def _cohen_record(line: str) -> dict:
    columns = line.split("\t")
    if len(columns) != len(COHEN_COLUMNS):
        raise ValueError(
            f"expected the {len(COHEN_COLUMNS)} tab-separated columns of a Cohen-format results file "
            f"({' '.join(COHEN_COLUMNS)}), got {len(columns)}"
        )
    idx, label, predict, radius, correct, elapsed = columns

    def class_number(name: str, text: str) -> int | None:
        try:
            value = int(text)
        except ValueError:
            value = -2
        if value < -1:
            raise ValueError(f"{name} {_brief(text)} is not a class number (or -1 for none)")
        return None if value == -1 else value

    try:
        index: int | str = int(idx)
    except ValueError:
        index = idx  # flagged by summaries as an invalid index, like a JSON one
    try:
        radius_value = float(radius)
    except ValueError:
        raise ValueError(f"radius {_brief(radius)} is not a number") from None
    if correct not in ("0", "1"):
        raise ValueError(f"correct {_brief(correct)} is not 0 or 1")
    try:
        seconds = _parse_timedelta(elapsed)
    except (ValueError, IndexError):
        raise ValueError(f"time {_brief(elapsed)} is not H:MM:SS") from None
    label_value = class_number("label", label)
    return {
        "index": index,
        "label": label_value,
        "prediction": class_number("predict", predict),
        "radius": radius_value,
        "correct": correct == "1" if label_value is not None else None,
        "seconds": seconds,
    }


def _parse_timedelta(text: str) -> float:
    """Seconds in ``str(datetime.timedelta)``: "H:MM:SS.ffffff" or "D day(s), H:MM:SS"."""
    days = 0
    if "day" in text:
        count, text = text.split(" day", 1)
        days, text = int(count), text.split(", ", 1)[1]
    hours, minutes, seconds = text.split(":")
    return days * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _check_header(header: dict, where: str) -> dict:
    """The header fields summaries read have the types they need."""
    if not isinstance(header.get("settings") or {}, dict):
        raise CertifyError(f"{where}: settings is not a JSON object; is this a certify results file?")
    ceiling = header.get("radius_ceiling")
    if ceiling is not None and not is_number(ceiling):
        raise CertifyError(f"{where}: radius_ceiling {ceiling!r} is not a number; is this a certify results file?")
    return header


def read_results(path: str | os.PathLike, record_type: str = "result",
                 record_problem: Callable[[Any], str | None] | None = None) -> tuple[dict, list[dict]]:
    """Header and every result record of a JSON-lines results file, by index.

    Records are returned as written, repeats included (summaries flag them);
    a half-written last line is skipped; a malformed record is a one-line error
    naming the file and line. ``record_type`` and ``record_problem`` read the records of
    another kind of run instead (``certify attack``'s: see :class:`ResultsFile`).
    """
    record_problem = record_problem or _record_problem
    path = Path(path)
    if not path.exists():
        raise CertifyError(f"results file not found: {path}")
    if _first_line(path) == b"":
        raise CertifyError(f"{path} is empty")
    try:
        # The first line alone, read with a bound: a large file without newlines is not read whole.
        header = json.loads(_first_line(path).decode("utf-8", errors="replace"), parse_int=_json_int)
    except (json.JSONDecodeError, RecursionError):
        header = None
    if not isinstance(header, dict) or header.get("type") != "header":
        raise CertifyError(f"{path} is not a certify results file (its first line is not a header)")
    header = _check_header(header, f"{path}, line 1")
    records: list[dict] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            handle.readline()
            for number, line in enumerate(handle, 2):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line, parse_int=_json_int)
                except (json.JSONDecodeError, RecursionError):
                    if not line.endswith("\n"):
                        break  # half-written last line of a killed run
                    raise CertifyError(f"{path}, line {number}: not valid JSON; is this a certify results file?") from None
                if isinstance(record, dict) and "type" not in record:
                    raise CertifyError(f"{path}, line {number}: the record has no 'type'")
                if isinstance(record, dict) and record["type"] != record_type:
                    continue  # another kind of line (a later version's); not a result
                problem = record_problem(record)
                if problem:
                    raise CertifyError(f"{path}, line {number}: {problem}")
                records.append(record)
    except OSError as error:
        raise CertifyError(f"cannot read {path}: {_oserror(error)}") from None
    return header, _by_index(records)


def _by_index(records: list[dict]) -> list[dict]:
    """Sorted by index, repeats in the order written; records with invalid indices last."""
    valid = sorted((r for r in records if is_index(r["index"])), key=lambda r: r["index"])
    return valid + [r for r in records if not is_index(r["index"])]


def load_any_results(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """Read a JSON-lines or Cohen TSV results file."""
    path = Path(path)
    if not path.exists():
        raise CertifyError(f"results file not found: {path}")
    if not path.is_file():
        raise CertifyError(f"{path} is not a results file (not a regular file)")
    if _first_line(path).startswith(b"idx\t"):
        sidecar = path.with_name(path.name + ".header.json")
        header = {"plugin": "?", "norm": "?"}
        if sidecar.exists():
            header = _read_json_dict(sidecar)
            if header is None:
                raise CertifyError(f"{sidecar} (the settings of {path.name}) is not a JSON object; remove it or fix it")
            _check_header(header, str(sidecar))
        return header, _by_index(read_cohen(path))
    return read_results(path)
