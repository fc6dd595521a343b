"""`make demo` does what the README says: a Ready llama NimService, one chat completion through
its Service, and `kubectl nim check` passing against it; `make down` stops all of it.

It runs the same entry points the Makefile does (`nimlab demo`, `nimlab down`) on a lab of its
own, in a temporary state directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nimlab import procs

pytestmark = pytest.mark.integration


def _nimlab(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nimlab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_make_demo_serves_and_passes_nim_check(tmp_path: Path) -> None:
    state = tmp_path / "lab"
    try:
        demo = _nimlab("demo", "--state-dir", str(state), timeout=420)
        out = demo.stdout
        assert demo.returncode == 0, f"demo failed:\n{out}\n{demo.stderr}"
        rows = [line.split() for line in out.splitlines() if line.startswith("llama-3-1-8b")]
        assert any(row[1] == "True" and row[2] == "Serving" for row in rows), out
        assert '"content"' in out, "no chat completion printed"
        assert "$ kubectl nim check llama-3-1-8b-instruct --endpoint http://127." in out
        assert "Demo ready in" in out
    finally:
        down = _nimlab("down", "--state-dir", str(state), timeout=120)
    assert down.returncode == 0, down.stderr
    left = procs.lab_processes(state.resolve())
    assert not left, f"still running after `nimlab down`: {left}"
