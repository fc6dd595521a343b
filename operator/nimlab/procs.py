"""Finding a lab's processes by what they were started with, straight from /proc.

Every process of a lab names its workdir on its command line (etcd's data dir, the kubeconfig
path, the serve command's state dir), which identifies them even after their parent is gone
and their process group was changed: exactly the situation orphan checks must handle.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

PROC = Path("/proc")


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _stat_fields(pid: int) -> list[str]:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return []
    # The command name is in parentheses and may itself contain spaces or parentheses.
    return text[text.rfind(")") + 2 :].split()


def alive(pid: int) -> bool:
    """True for a running process; a zombie has exited, whether or not anyone reaps it."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def parent(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[1]) if len(fields) > 1 else 0


def ancestors(pid: int) -> set[int]:
    result: set[int] = set()
    while pid > 1 and pid not in result:
        result.add(pid)
        pid = parent(pid)
    return result


def mentions(argv: list[str], workdir: Path) -> bool:
    root = str(workdir)
    return any(arg == root or f"{root}/" in arg or arg.endswith(f"={root}") for arg in argv)


def lab_processes(workdir: Path) -> dict[int, list[str]]:
    """Live processes whose command line names `workdir`, except this one and its ancestors
    (the shell that runs `nimlab down --state-dir <workdir>` mentions it too)."""
    workdir = workdir.resolve()
    mine = ancestors(os.getpid())
    found: dict[int, list[str]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in mine or not alive(pid):
            continue
        argv = cmdline(pid)
        if mentions(argv, workdir):
            found[pid] = argv
    return found


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait until none of `pids` runs; return those still running at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = {pid for pid in pids if alive(pid)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def signal_all(pids: set[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
