"""Recognising a lab's processes by their command lines."""

from __future__ import annotations

import os
from pathlib import Path

from nimlab import procs
from nimlab.leases import pod_slices


def test_mentions_matches_the_directory_not_its_siblings() -> None:
    lab = Path("/tmp/x/lab")
    assert procs.mentions(["etcd", "--data-dir=/tmp/x/lab/etcd"], lab)
    assert procs.mentions(["nimlab", "serve", "--state-dir", "/tmp/x/lab"], lab)
    assert procs.mentions(["kwok", "--kubeconfig=/tmp/x/lab"], lab)
    assert not procs.mentions(["etcd", "--data-dir=/tmp/x/lab2/etcd"], lab)


def test_this_process_is_alive_and_never_its_own_lab_member(tmp_path: Path) -> None:
    assert procs.alive(os.getpid())
    assert os.getppid() in procs.ancestors(os.getpid())
    assert procs.lab_processes(tmp_path) == {}


def test_pod_slices_stay_in_the_pod_range() -> None:
    slices = pod_slices()
    assert slices[0] == "127.1.0.0/20"
    assert slices[-1] == "127.1.240.0/20"
    assert len(slices) == 16
