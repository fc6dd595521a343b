"""Where the control plane's binaries come from: hack/k8s/build.sh, cached outside the repo."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REQUIRED = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def ensure_binaries() -> Path:
    """Return the bin directory, building what is missing (minutes cold, instant warm).

    NIMLAB_BIN_DIR points at a prepared directory instead (for example one built elsewhere).
    """
    override = os.environ.get("NIMLAB_BIN_DIR")
    if override:
        bin_dir = Path(override)
    else:
        script = repo_root() / "hack" / "k8s" / "build.sh"
        out = subprocess.run([str(script)], check=True, stdout=subprocess.PIPE, text=True)
        bin_dir = Path(out.stdout.strip().splitlines()[-1])
    missing = [name for name in REQUIRED if not (bin_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"missing control plane binaries in {bin_dir}: {missing}")
    return bin_dir


def ensure_karpenter() -> Path:
    """Return Karpenter's build directory (bin/karpenter, crds/), building it if missing.

    hack/karpenter/build.sh: minutes cold, instant warm. NIMLAB_KARPENTER_DIR points at a
    prepared directory instead.
    """
    override = os.environ.get("NIMLAB_KARPENTER_DIR")
    if override:
        home = Path(override)
    else:
        script = repo_root() / "hack" / "karpenter" / "build.sh"
        out = subprocess.run([str(script)], check=True, stdout=subprocess.PIPE, text=True)
        home = Path(out.stdout.strip().splitlines()[-1])
    if not (home / "bin" / "karpenter").is_file():
        raise FileNotFoundError(f"missing the Karpenter binary in {home / 'bin'}")
    return home
