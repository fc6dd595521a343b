"""Which slice of the loopback pod range a lab may use.

Several labs share one machine (a test session beside `make cluster-up`, or several engineers'
sessions), and every pod's simulator listens on podIP:port: two labs handing out the same pod IP
would fight over the same socket. Each lab therefore leases one /20 of 127.1.0.0/16 for its
lifetime, through a lock file that the kernel releases when the owning process dies, however it
dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nimlab.nodes import POD_CIDR

LEASE_DIR = Path(tempfile.gettempdir()) / "nimlab-leases"
SLICE_PREFIX = 20


@dataclass
class Lease:
    cidr: str
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def pod_slices() -> list[str]:
    return [str(net) for net in ipaddress.IPv4Network(POD_CIDR).subnets(new_prefix=SLICE_PREFIX)]


def acquire_pod_cidr() -> Lease:
    """Lease the first free slice; raises OSError when every slice is taken."""
    LEASE_DIR.mkdir(mode=0o777, exist_ok=True)
    for index, cidr in enumerate(pod_slices()):
        path = LEASE_DIR / f"pod-cidr-{index}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Lease(cidr, fd)
    raise OSError(f"all {len(pod_slices())} pod address ranges are leased by other labs")
