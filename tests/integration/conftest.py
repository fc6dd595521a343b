"""One real control plane for the whole integration session.

If it cannot start, every integration test errors: CI fails, nothing is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from nimlab.binaries import ensure_binaries
from nimlab.cluster import Cluster
from nimlab.control import RunnerControl
from nimlab.testing import api_client

from .helpers import CRD, Kubectl, OperatorProcess


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    bin_dir = ensure_binaries()
    # Tests use short probe periods; the runner scales kubelet-style timings to match.
    runner_args = ["--time-scale", os.environ.get("NIMLAB_TIME_SCALE", "0.2")]
    cluster = Cluster(
        workdir=Path(tmp_path_factory.mktemp("lab")),
        bin_dir=bin_dir,
        runner_args=runner_args,
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _lab_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail loudly, with the component's log, if part of the control plane died."""
    if "lab" not in request.fixturenames:
        yield
        return
    cluster: Cluster = request.getfixturevalue("lab")
    assert cluster.healthy(), f"lab component {cluster.crashed} crashed before the test"
    yield
    assert cluster.healthy(), f"lab component {cluster.crashed} crashed during the test"


@pytest.fixture
def namespace(lab: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    lab.create_namespace(name)
    yield name
    lab.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def crd(lab: Cluster) -> Path:
    """Both CRDs, before any operator starts (kopf does not notice a CRD added later)."""
    lab.install_crds(CRD.parent)
    return CRD


@pytest.fixture(scope="module")
def operator(
    lab: Cluster, crd: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator as a real process, shared by a module's tests (some restart or kill it)."""
    proc = OperatorProcess(lab, Path(tmp_path_factory.mktemp("operator")))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def k(lab: Cluster, namespace: str) -> Kubectl:
    """kubectl in a fresh namespace that already holds the NGC Secrets the examples reference."""
    kubectl = Kubectl(lab, namespace)
    kubectl.secrets()
    return kubectl


@pytest.fixture(scope="module")
def api(lab: Cluster) -> Iterator[Any]:
    """The official (synchronous) client for tests that drive core Kubernetes objects."""
    with api_client(lab) as api:
        yield api


@pytest.fixture
def core(api: Any) -> Any:
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api: Any) -> Any:
    """Typed Any: the generated client wants V1 models; tests hand it plain manifests."""
    return client.AppsV1Api(api)


@pytest.fixture
def control(lab: Cluster) -> RunnerControl:
    return RunnerControl(lab.runner_control)
