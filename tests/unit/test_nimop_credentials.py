"""Where the operator finds the API server and its identity: the service account in a pod, or
a kubeconfig with a token, a token file, certificates or an exec plugin."""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from nimop.runtime import credentials
from nimop.runtime.credentials import CredentialsError

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def kubeconfig(
    path: Path,
    *,
    user: dict[str, Any],
    cluster: dict[str, Any] | None = None,
    current: str | None = "lab",
    namespace: str | None = None,
) -> Path:
    context: dict[str, Any] = {"cluster": "lab", "user": "me"}
    if namespace:
        context["namespace"] = namespace
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": cluster or {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "me", "user": user}],
        "contexts": [{"name": "lab", "context": context}],
    }
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def test_token_kubeconfig(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path / "config",
        user={"token": "abc"},
        cluster={
            "server": "https://127.0.0.1:6443",
            "certificate-authority-data": base64.b64encode(PEM.encode()).decode(),
            "proxy-url": "http://127.0.0.1:3128",
        },
        namespace="team-a",
    )
    creds = credentials.load(str(path), environ={})
    assert creds.server == "https://127.0.0.1:6443"
    assert creds.ca_pem == PEM
    assert creds.proxy_url == "http://127.0.0.1:3128"
    assert creds.namespace == "team-a"
    assert creds.headers() == {"Authorization": "Bearer abc"}
    assert creds.refresh_after is None
    assert creds.expires is None


def test_relative_files_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    path = kubeconfig(
        tmp_path / "config",
        user={"tokenFile": "token", "client-certificate": "me.crt", "client-key": "me.key"},
        cluster={"server": "https://127.0.0.1:6443", "certificate-authority": "ca.crt"},
    )
    creds = credentials.load(str(path), environ={}, now=lambda: 1000.0)
    assert creds.ca_file == str(tmp_path / "ca.crt")
    assert creds.cert_file == str(tmp_path / "me.crt")
    assert creds.key_file == str(tmp_path / "me.key")
    assert creds.token == "from-file"
    assert creds.refresh_after == 1000.0 + credentials.REREAD_SECONDS


def test_files_merge_first_definition_wins(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", user={"token": "first"}, current=None)
    second = kubeconfig(tmp_path / "b", user={"token": "second"}, current="lab")
    creds = credentials.load(f"{first}:{second}", environ={})
    assert creds.token == "first"


def test_explicit_kubeconfig_wins_over_the_service_account(tmp_path: Path) -> None:
    account = service_account(tmp_path)
    path = kubeconfig(tmp_path / "config", user={"token": "kubeconfig"})
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBECONFIG": str(path)}
    assert credentials.load(environ=env, service_account=account).token == "kubeconfig"


def service_account(tmp_path: Path) -> Path:
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("sa-token\n")
    (account / "ca.crt").write_text(PEM)
    (account / "namespace").write_text("nimop-system")
    return account


def test_in_a_pod_the_service_account_at_the_kubelet_given_address(tmp_path: Path) -> None:
    account = service_account(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    creds = credentials.load(environ=env, service_account=account, now=lambda: 50.0)
    assert creds.server == "https://[fd00::1]:6443"
    assert creds.token == "sa-token"
    assert creds.ca_file == str(account / "ca.crt")
    assert creds.namespace == "nimop-system"
    assert creds.refresh_after == 50.0 + credentials.REREAD_SECONDS


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"current": None}, "no current-context"),
        ({"current": "elsewhere"}, "no context named 'elsewhere'"),
        ({"user": {"auth-provider": {"name": "gcp"}}}, "auth-provider plugins are not supported"),
        ({"cluster": {"certificate-authority": "ca"}}, "no server"),
        ({"user": {"tokenFile": "absent"}}, "tokenFile"),
        ({"user": {"client-key-data": "not base64!"}}, "not base64"),
    ],
)
def test_unusable_kubeconfigs_say_why(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    path = kubeconfig(
        tmp_path / "config",
        user=config.get("user", {"token": "x"}),
        cluster=config.get("cluster"),
        current=config.get("current", "lab"),
    )
    with pytest.raises(CredentialsError, match=message):
        credentials.load(str(path), environ={})


def test_missing_kubeconfig_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="absent"):
        credentials.load(str(tmp_path / "absent"), environ={})


def plugin(tmp_path: Path, output: dict[str, Any] | None, code: int = 0) -> Path:
    script = tmp_path / "plugin.py"
    script.write_text(
        "import json, os, sys\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['spec']['interactive'] is False, info\n"
        "assert os.environ['REGION'] == 'eu-frankfurt-1'\n"
        "sys.stderr.write('token service said no')\n"
        f"print(json.dumps({output!r}))\n"
        f"sys.exit({code})\n"
    )
    return script


def exec_user(script: Path) -> dict[str, Any]:
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(script)],
            "env": [{"name": "REGION", "value": "eu-frankfurt-1"}],
            "interactiveMode": "Never",
        }
    }


def test_exec_plugin_token_and_expiry(tmp_path: Path) -> None:
    status = {"token": "exec-token", "expirationTimestamp": "2026-12-01T10:00:00Z"}
    script = plugin(tmp_path, {"apiVersion": "client.authentication.k8s.io/v1", "status": status})
    path = kubeconfig(tmp_path / "config", user=exec_user(script))
    creds = credentials.load(str(path), environ={})
    assert creds.token == "exec-token"
    assert creds.expires == datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp()


def test_exec_plugin_failure_shows_its_error(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", user=exec_user(plugin(tmp_path, None, code=3)))
    with pytest.raises(CredentialsError, match="exit 3: token service said no"):
        credentials.load(str(path), environ={})


def test_basic_auth_header() -> None:
    creds = credentials.Credentials(server="https://x", username="u", password="p")
    assert creds.headers() == {"Authorization": "Basic dTpw"}


def test_insecure_skips_verification() -> None:
    context = credentials.Credentials(server="https://x", insecure=True).ssl_context()
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname


def test_client_certificate_data_is_loaded(tmp_path: Path) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=me",
            "-days",
            "1",
            "-keyout",
            str(tmp_path / "k"),
            "-out",
            str(tmp_path / "c"),
        ],
        check=True,
        capture_output=True,
    )
    cert, key = (tmp_path / "c").read_text(), (tmp_path / "k").read_text()
    creds = credentials.Credentials(server="https://x", ca_pem=cert, cert_pem=cert, key_pem=key)
    assert creds.ssl_context().verify_mode == ssl.CERT_REQUIRED


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_source_rereads_when_due_and_keeps_the_old_token_on_failure() -> None:
    clock = Clock()
    tokens = iter(["one", "two"])

    def loader() -> credentials.Credentials:
        token = next(tokens, None)
        if token is None:
            raise CredentialsError("gone")
        return credentials.Credentials(server="https://x", token=token, refresh_after=clock() + 60)

    source = credentials.Source(loader, now=clock)
    assert not source.due()
    clock.now = 61
    assert source.due()
    assert source.refresh().token == "two"
    clock.now = 200
    kept = source.refresh()
    assert kept.token == "two"
    assert kept.refresh_after == 200 + credentials.REREAD_SECONDS
    assert not source.due()


def test_source_fetches_an_exec_token_before_it_expires() -> None:
    clock = Clock()
    source = credentials.Source(
        lambda: credentials.Credentials(server="https://x", token="t", expires=1000.0), now=clock
    )
    clock.now = 1000.0 - credentials.EXPIRY_MARGIN_SECONDS - 1
    assert not source.due()
    clock.now += 1
    assert source.due()
