"""Files a command writes: refusing paths that would destroy something else, and
replacing a file in one step."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import Iterable, Iterator

from .errors import CertifyError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))


def check_output_file(path: str | os.PathLike, option: str,
                      inputs: Iterable[tuple[str, str | os.PathLike | None]] = ()) -> None:
    """Refuse, in one line, to write ``path`` (given as ``option``, e.g. "--out") where that would
    destroy what is not an earlier output: a folder, a device, a named pipe or socket, a symbolic
    link (replacing it or writing through it are both surprises), or one of the command's own
    files, ``inputs``: (option, path) pairs such as ("--data", data); None paths are skipped.
    A regular file that is none of these may be replaced: that is what writing an output means.
    """
    path = Path(path)
    if path.is_symlink():
        raise CertifyError(f"{option} {path} is a symbolic link to {os.readlink(path)}; give the path of a "
                           f"regular file instead (the target itself, or a new file)")
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as error:
        raise CertifyError(f"{option} {path}: {error.strerror or error}; choose another {option}") from None
    if mode is not None and not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise CertifyError(f"{option} {path} is {kind}, not a regular file; choose a file path for {option}")
    if mode is None:
        folder = next((p for p in path.absolute().parents if p.exists()), None)
        if folder is not None and not folder.is_dir():
            raise CertifyError(f"{option} {path}: {folder} is not a folder; choose another {option}")
    for name, other in inputs:
        if other is not None and _same_file(path, Path(other)):
            raise CertifyError(f"{option} {path} is the same file as {name} {other}; writing there would destroy "
                               f"it: choose another {option}")


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (through links too), or would once ``a`` is created."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


@contextlib.contextmanager
def replacing_file(path: str | os.PathLike) -> Iterator[Path]:
    """A new temporary file beside ``path`` to write; it replaces ``path`` in one step when the
    block ends, and is removed if the block fails. Its name is new, so nothing is overwritten
    on the way (a fixed name such as "PATH.tmp" could be one of the user's files)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = _new_file_beside(path)
    except OSError as error:
        raise CertifyError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _new_file_beside(path: Path) -> Path:
    """An empty file of a new name in ``path``'s folder, with the permissions a new file gets
    (tempfile's are private to the user)."""
    while True:
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return candidate
        except FileExistsError:
            continue
