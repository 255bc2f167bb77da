"""How much memory and how many CPU threads a run may take."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CertifyError


def available_memory() -> int:
    """Bytes of memory this process may still take (a cgroup limit counts)."""
    found = []
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (AttributeError, ValueError, OSError):
            found.append(1 << 33)
    return min(found)


def memory_budget() -> int:
    """Bytes one batch of model inputs and outputs may take: half the available memory."""
    return available_memory() // 2


def check_memory(needed: int, what: str, advice: str, available: int | None = None) -> None:
    """Refuse, in one line, work that needs more than ``available`` bytes (default: the memory
    this process may still take); ``what`` names the work, ``advice`` says what to lower."""
    available = available_memory() if available is None else available
    if needed > available:
        raise CertifyError(f"{what} needs at least {format_size(needed)} of memory, and {format_size(available)} "
                           f"is available; {advice}")


def format_size(count: int) -> str:
    """A byte count in MiB or GiB, for messages."""
    return f"{count / (1 << 30):.1f} GiB" if count >= 1 << 28 else f"{count / (1 << 20):.1f} MiB"


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


#: at most this many batches run at once on the CPU (each holds its activations)
MAX_CPU_RUNS = 8


def cpu_runs(threads: int) -> tuple[int, int]:
    """How to spend ``threads`` CPU threads: (runs side by side, threads per run).

    Several runs side by side beat one run spread over all cores: nothing waits at a
    barrier while another thread makes noise. Past MAX_CPU_RUNS, runs get more threads
    each instead, so memory stays bounded on machines with many cores.
    """
    runs = max(1, min(threads, MAX_CPU_RUNS))
    return runs, max(1, threads // runs)


def parallelism(on_cpu: bool, threads: int | None) -> tuple[int, int | None]:
    """(batches the engine runs at once, threads of each onnxruntime session; None: its default).

    On the CPU one run per thread up to MAX_CPU_RUNS (each also makes its own views); on a
    GPU two, so views are made while the model runs.
    """
    if on_cpu:
        return cpu_runs(threads or usable_cores())
    return 2, threads
