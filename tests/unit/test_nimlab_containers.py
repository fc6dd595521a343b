"""Image-tag pull faults, env expansion, the downward API, probe parsing and port choice."""

from __future__ import annotations

from typing import Any

import pytest

from nimlab.container import serving_port
from nimlab.containerenv import expand, field_value, image_tag, pull_error, secret_text
from nimlab.probes import Probe, resolve_port
from nimlab.timing import TimeScale

CONTAINER: dict[str, Any] = {
    "name": "nim",
    "ports": [{"name": "metrics", "containerPort": 9000}, {"name": "http", "containerPort": 8000}],
}


def test_pull_faults_come_from_the_tag_only() -> None:
    assert pull_error("nvcr.io/nim/meta/llama-3.1-8b-instruct:1.0") is None
    assert pull_error("nvcr.io/pull-error/llama:1.0") is None
    assert "401 Unauthorized" in (pull_error("nvcr.io/nim/x:1.0-pull-error") or "")
    assert "not found" in (pull_error("nvcr.io/nim/x:no-such-tag") or "")
    assert image_tag("localhost:5000/x/y:2.0@sha256:abc") == "2.0"
    assert image_tag("nvcr.io/nim/x") == ""


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1"}
    assert expand("$(A)-$(B)-$$(A)", env) == "1-$(B)-$(A)"


def test_secret_values_reach_the_container_decoded() -> None:
    assert secret_text("bnZhcGktMTIz") == "nvapi-123"
    assert secret_text("not base64!") == ""


def test_field_refs() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "llama"}},
        "spec": {"nodeName": "gpu-node-0"},
        "status": {"podIP": "127.1.0.9"},
    }
    assert field_value(pod, "status.podIP") == "127.1.0.9"
    assert field_value(pod, "spec.nodeName") == "gpu-node-0"
    assert field_value(pod, "metadata.labels['app']") == "llama"


def test_probe_defaults_and_scaling() -> None:
    spec = {"httpGet": {"path": "v1/health/ready", "port": "http"}, "initialDelaySeconds": 30}
    probe = Probe.parse(spec, CONTAINER, TimeScale(0.2))
    assert probe is not None
    assert (probe.port, probe.path) == (8000, "/v1/health/ready")
    assert probe.initial_delay == pytest.approx(6.0)
    assert probe.period == pytest.approx(2.0)
    assert probe.timeout == 1.0  # the application does not run faster: timeouts stay real
    assert (probe.success_threshold, probe.failure_threshold) == (1, 3)
    assert Probe.parse(None, CONTAINER, TimeScale()) is None
    exec_probe = Probe.parse({"exec": {"command": ["true"]}}, CONTAINER, TimeScale())
    assert exec_probe is not None
    assert exec_probe.kind == "none"


def test_ports() -> None:
    assert resolve_port("metrics", CONTAINER) == 9000
    assert resolve_port("8080", CONTAINER) == 8080
    assert resolve_port("nope", CONTAINER) == 0
    assert serving_port(CONTAINER, {}) == 9000
    assert serving_port(CONTAINER, {"NIM_SERVER_PORT": "8000"}) == 8000
    assert serving_port({"name": "sidecar"}, {}) is None
