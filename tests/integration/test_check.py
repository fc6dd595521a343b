"""`kubectl nim check` on the lab: kubectl finds the plugin, the plugin reads the NimService from
the real API server (TLS, token auth, RBAC), and checks the NIM at its Service address.

The lab's API server cannot proxy to loopback pod IPs (docs/lab.md), so the checks reach the
NIM with --endpoint at the Service's lab address, as a user would with a LoadBalancer address;
the default service-proxy path is exercised against the real API server up to the point where
it must find an endpoint, and in unit tests beyond that (tests/unit/test_nimcheck_proxy.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nimcheck.checks import CHECKS
from nimlab.cluster import Cluster
from nimlab.control import RunnerControl

from .helpers import REPO, Kubectl, OperatorProcess, nimservice, wait_for

pytestmark = pytest.mark.integration

NAME = "llama-3-1-8b-instruct"


def kubectl_nim(
    lab: Cluster, *args: str, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`kubectl nim ...` as a user runs it: kubectl looks `kubectl-nim` up on PATH."""
    scripts = Path(sys.executable).parent  # the venv's bin, where `kubectl-nim` is installed
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig or lab.kubeconfig),
        "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return subprocess.run(
        [str(lab.bin_dir / "kubectl"), "nim", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_check_passes_against_the_llama_example(
    operator: OperatorProcess, k: Kubectl, control: RunnerControl
) -> None:
    k.apply((REPO / "examples" / "llama-3.1-8b-instruct.yaml").read_text())
    k.wait_condition(NAME, "Ready", "True", "Serving", timeout=90)
    url = control.service_url(k.ns, NAME)
    flags = ["-n", k.ns, "--endpoint", url, "--requests", "10", "--concurrency", "5"]

    text = kubectl_nim(k.lab, "check", NAME, *flags)
    print(text.stdout)  # shown with -s, and by pytest when the test fails
    assert text.returncode == 0, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"NimService {k.ns}/{NAME} is Ready (Serving)"
    assert lines[1] == f"Checking meta/llama-3.1-8b-instruct at {url}"
    for check in CHECKS:
        [row] = [line for line in lines if line.split()[1:2] == [check.name]]
        assert row.startswith("PASS") or (row.startswith("WARN") and not check.required), row
    assert lines[-1].endswith("Every required check passed.")

    doc = kubectl_nim(k.lab, "check", NAME, *flags, "-o", "json")
    assert doc.returncode == 0, doc.stderr
    parsed = json.loads(doc.stdout)
    assert parsed["passed"] is True
    assert parsed["nimService"]["ready"]["reason"] == "Serving"
    assert parsed["latency"]["requests"] == 10
    assert parsed["latency"]["errors"] == 0
    assert parsed["throughput"]["errors"] == 0
    assert parsed["throughput"]["concurrency"] == 5


@pytest.mark.parametrize(
    ("tag", "reason"),
    [("1.3.3-never-ready", "ModelLoading"), ("1.3.3-wrong-model", "ModelMismatch")],
)
def test_a_nimservice_that_is_not_ready_is_one_line(
    operator: OperatorProcess, k: Kubectl, tag: str, reason: str
) -> None:
    name = "stuck"
    k.apply(nimservice(name, tag=tag))
    k.wait_condition(name, "ModelReady", "False", reason, timeout=90)

    def expected() -> str:
        ready = k.condition(name, "Ready")
        assert ready is not None
        assert ready["status"] == "False"
        return (
            f"error: NimService {k.ns}/{name} is not Ready ({ready['reason']}): {ready['message']}"
        )

    before = expected()
    line = one_error_line(kubectl_nim(k.lab, "check", name, "-n", k.ns))
    assert line in (before, expected())  # the operator may have moved on meanwhile


def test_a_missing_nimservice_is_one_line(operator: OperatorProcess, k: Kubectl) -> None:
    line = one_error_line(kubectl_nim(k.lab, "check", "nope", "-n", k.ns))
    assert line == f"error: NimService {k.ns}/nope not found"


def test_bad_credentials_and_missing_rbac_are_one_line(
    crd: Path, k: Kubectl, tmp_path: Path
) -> None:
    bogus = k.lab.write_kubeconfig(tmp_path / "bogus", "not-a-token", user="mallory")
    line = one_error_line(kubectl_nim(k.lab, "check", NAME, "-n", k.ns, kubeconfig=bogus))
    assert "rejected the credentials of user mallory in context nimlab (401 Unauthorized)" in line

    k("create", "serviceaccount", "nobody")
    token = k("create", "token", "nobody", "--duration=10m").strip()
    nobody = k.lab.write_kubeconfig(tmp_path / "nobody", token, user="nobody")
    line = one_error_line(kubectl_nim(k.lab, "check", NAME, "-n", k.ns, kubeconfig=nobody))
    assert line.startswith("error: forbidden by the API server (403): ")
    assert f'User "system:serviceaccount:{k.ns}:nobody" cannot get resource "nimservices"' in line


def role(k: Kubectl, name: str, rules: list[dict[str, list[str]]]) -> None:
    k.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": rules,
        }
    )


def allowed(k: Kubectl, verb: str, resource: str, *flags: str) -> None:
    """Wait for the API server's RBAC cache, which follows a Role change by a moment."""
    who = f"--as=system:serviceaccount:{k.ns}:checker"
    wait_for(
        f"checker may {verb} {resource} {' '.join(flags)}",
        lambda: k.run("auth", "can-i", verb, resource, *flags, who).stdout.strip() == "yes",
        timeout=30,
    )


def test_the_service_proxy_path_with_the_documented_rbac(
    operator: OperatorProcess, k: Kubectl, tmp_path: Path
) -> None:
    k.apply(nimservice("proxied"))
    k.wait_condition("proxied", "Ready", "True", timeout=90)
    k("create", "serviceaccount", "checker")
    k("create", "rolebinding", "checker", "--role=nimcheck", f"--serviceaccount={k.ns}:checker")
    token = k("create", "token", "checker", "--duration=10m").strip()
    kubeconfig = k.lab.write_kubeconfig(tmp_path / "checker", token, user="checker")
    read_nims = {"apiGroups": ["nimop.dev"], "resources": ["nimservices"], "verbs": ["get"]}

    role(k, "nimcheck", [read_nims])
    allowed(k, "get", "nimservices.nimop.dev")
    line = one_error_line(kubectl_nim(k.lab, "check", "proxied", "-n", k.ns, kubeconfig=kubeconfig))
    assert line.startswith("error: forbidden by the API server (403): ")
    assert 'cannot get resource "services/proxy"' in line

    # docs/check.md: get on nimservices, get and create (GET and POST) on services/proxy.
    proxy = {"apiGroups": [""], "resources": ["services/proxy"], "verbs": ["get", "create"]}
    role(k, "nimcheck", [read_nims, proxy])
    allowed(k, "create", "services", "--subresource=proxy")
    line = one_error_line(kubectl_nim(k.lab, "check", "proxied", "-n", k.ns, kubeconfig=kubeconfig))
    # Authorised now, the API server found the Service and its port 8000 (a wrong port is a
    # 503 "no service port"), then looked for the Service's Endpoints, which the lab does not
    # publish because they refuse loopback pod IPs (docs/lab.md); that lookup's NotFound comes
    # back. kube-apiserver: pkg/registry/core/service/storage/storage.go, ResourceLocation.
    assert f"/api/v1/namespaces/{k.ns}/services/http:proxied:8000/proxy" in line
    assert line.endswith(
        'the API server could not proxy to the Service (HTTP 404): services "proxied" not found'
    )
