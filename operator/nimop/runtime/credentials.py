"""Where the API server is and who the operator is to it: one answer for kopf's watches and for
the operator's own requests, so both reach the same server with the same identity.

In a pod: the service account the kubelet mounts, at the address it gives every pod
(KUBERNETES_SERVICE_HOST/PORT). kopf's own service-account login dials
kubernetes.default.svc, which needs cluster DNS and ignores that address. Elsewhere: a
kubeconfig (KUBECONFIG, a list of files merged as kubectl merges them, or ~/.kube/config) with
a token, a token file, client certificates or an exec plugin (`aws eks get-token`,
`oci ce cluster generate-token`). An explicit kubeconfig wins over the service account.

The official client's loaders would do this, but importing the `kubernetes` package keeps
10 MiB resident for good (its generated API classes and their dependencies), and the operator
uses nothing else of it.

Tokens go stale: the kubelet rotates a service account's token file, and an exec plugin's
token expires. `Source` re-reads the file every minute and runs the plugin again before its
token expires.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REREAD_SECONDS = 60.0
"""How stale a token read from a file may get: the kubelet rotates a service account token
well before it expires (at 80% of its life, an hour by default)."""
EXPIRY_MARGIN_SECONDS = 60.0
EXEC_TIMEOUT_SECONDS = 60.0


class CredentialsError(Exception):
    """No usable way to reach the API server; the message says what is missing."""


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_file: str | None = None
    ca_pem: str | None = None
    insecure: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None
    proxy_url: str | None = None
    namespace: str | None = None
    expires: float | None = None
    """Epoch seconds when the token stops working (an exec plugin's expirationTimestamp)."""
    refresh_after: float | None = None
    """Epoch seconds after which the token is read again (from a file that rotates)."""

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.username and self.password:
            pair = f"{self.username}:{self.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        return {}

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_pem)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        with contextlib.ExitStack() as stack:
            # ssl loads client certificates from files only: data is written to a private
            # temporary file for as long as loading takes.
            cert = self.cert_file or (
                self.cert_pem and stack.enter_context(_pem_file(self.cert_pem))
            )
            key = self.key_file or (self.key_pem and stack.enter_context(_pem_file(self.key_pem)))
            if cert:
                context.load_cert_chain(cert, key or None)
        return context


@contextlib.contextmanager
def _pem_file(pem: str) -> Iterator[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".pem", encoding="ascii") as handle:
        handle.write(pem)
        handle.flush()
        yield handle.name


def load(
    kubeconfig: str | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    service_account: Path = SERVICE_ACCOUNT,
    now: Callable[[], float] = time.time,
) -> Credentials:
    """`kubeconfig`: a path list as in KUBECONFIG; None means KUBECONFIG, else the service
    account when in a pod, else ~/.kube/config."""
    paths = kubeconfig or environ.get("KUBECONFIG")
    if not paths:
        in_pod = in_cluster(environ=environ, service_account=service_account, now=now)
        if in_pod is not None:
            return in_pod
        paths = str(Path("~/.kube/config").expanduser())
    return from_kubeconfig(paths, environ=environ, now=now)


def in_cluster(
    *,
    environ: Mapping[str, str] = os.environ,
    service_account: Path = SERVICE_ACCOUNT,
    now: Callable[[], float] = time.time,
) -> Credentials | None:
    host = environ.get("KUBERNETES_SERVICE_HOST")
    token = service_account / "token"
    if not host or not token.exists():
        return None
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    ca = service_account / "ca.crt"
    namespace = service_account / "namespace"
    return Credentials(
        server=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
        ca_file=str(ca) if ca.exists() else None,
        token=token.read_text(encoding="utf-8").strip() or None,
        namespace=(namespace.read_text(encoding="utf-8").strip() or None)
        if namespace.exists()
        else None,
        refresh_after=now() + REREAD_SECONDS,
    )


def from_kubeconfig(
    paths: str,
    *,
    environ: Mapping[str, str] = os.environ,
    now: Callable[[], float] = time.time,
) -> Credentials:
    """The current context of the merged files: for each name, the first file that defines it
    wins, as kubectl merges them. Relative file names are relative to the file naming them."""
    current: str | None = None
    entries: dict[str, dict[str, tuple[dict[str, Any], Path]]] = {
        "contexts": {},
        "clusters": {},
        "users": {},
    }
    for path in (Path(p).expanduser() for p in paths.split(os.pathsep) if p):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise CredentialsError(f"kubeconfig {path}: {err}") from None
        if not isinstance(doc, dict):
            raise CredentialsError(f"kubeconfig {path}: not a mapping")
        current = current or doc.get("current-context") or None
        singular = {"contexts": "context", "clusters": "cluster", "users": "user"}
        for section, found in entries.items():
            for item in doc.get(section) or []:
                if isinstance(item, dict) and item.get("name") not in found:
                    found[str(item.get("name"))] = (item.get(singular[section]) or {}, path.parent)
    if not current:
        raise CredentialsError(f"kubeconfig {paths}: no current-context")
    ctx, _ = _entry(entries, "contexts", current, paths)
    cluster, cluster_dir = _entry(entries, "clusters", str(ctx.get("cluster")), paths)
    user, user_dir = (
        _entry(entries, "users", str(ctx["user"]), paths) if ctx.get("user") else ({}, Path())
    )
    if "auth-provider" in user:
        raise CredentialsError(
            f"kubeconfig user {ctx['user']!r}: auth-provider plugins are not supported; "
            "use an exec plugin or a token"
        )
    creds = Credentials(
        server=str(cluster.get("server") or ""),
        ca_file=_file(cluster.get("certificate-authority"), cluster_dir),
        ca_pem=_pem(cluster.get("certificate-authority-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        proxy_url=cluster.get("proxy-url") or None,
        cert_file=_file(user.get("client-certificate"), user_dir),
        key_file=_file(user.get("client-key"), user_dir),
        cert_pem=_pem(user.get("client-certificate-data")),
        key_pem=_pem(user.get("client-key-data")),
        token=user.get("token") or None,
        username=user.get("username") or None,
        password=user.get("password") or None,
        namespace=ctx.get("namespace") or None,
    )
    if not creds.server:
        raise CredentialsError(f"kubeconfig cluster {ctx.get('cluster')!r}: no server")
    token_file = _file(user.get("tokenFile"), user_dir)
    if token_file and not creds.token:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise CredentialsError(f"kubeconfig tokenFile: {err}") from None
        creds = replace(creds, token=token, refresh_after=now() + REREAD_SECONDS)
    if isinstance(user.get("exec"), dict):
        creds = run_exec(creds, user["exec"], user_dir, environ=environ)
    return creds


def _entry(
    entries: dict[str, dict[str, tuple[dict[str, Any], Path]]], section: str, name: str, paths: str
) -> tuple[dict[str, Any], Path]:
    try:
        return entries[section][name]
    except KeyError:
        raise CredentialsError(f"kubeconfig {paths}: no {section[:-1]} named {name!r}") from None


def _file(value: Any, base: Path) -> str | None:
    return str(base / Path(str(value)).expanduser()) if value else None


def _pem(value: Any) -> str | None:
    """kubeconfig's *-data fields are base64 of PEM."""
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True).decode("ascii")
    except ValueError:
        raise CredentialsError("kubeconfig: a *-data field is not base64 of PEM") from None


def run_exec(
    creds: Credentials, spec: dict[str, Any], base: Path, *, environ: Mapping[str, str]
) -> Credentials:
    """Run a client-go credential plugin and take the ExecCredential it prints."""
    command = str(spec.get("command") or "")
    if not command:
        raise CredentialsError("kubeconfig exec: no command")
    if os.sep in command and not Path(command).is_absolute():
        command = str(base / command)
    env = dict(environ)
    env.update({str(e["name"]): str(e["value"]) for e in spec.get("env") or []})
    api_version = str(spec.get("apiVersion") or "client.authentication.k8s.io/v1")
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    )
    try:
        done = subprocess.run(
            [command, *map(str, spec.get("args") or [])],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=EXEC_TIMEOUT_SECONDS,
            check=True,
        )
        status = json.loads(done.stdout)["status"]
    except subprocess.CalledProcessError as err:
        detail = err.stderr.decode(errors="replace").strip()[-500:]
        raise CredentialsError(
            f"kubeconfig exec {command}: exit {err.returncode}: {detail}"
        ) from None
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError) as err:
        raise CredentialsError(f"kubeconfig exec {command}: {err}") from None
    expires = status.get("expirationTimestamp")
    return replace(
        creds,
        token=status.get("token") or creds.token,
        cert_pem=status.get("clientCertificateData") or creds.cert_pem,
        key_pem=status.get("clientKeyData") or creds.key_pem,
        expires=datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
        if expires
        else None,
    )


class Source:
    """The current credentials, loaded again once the token is due (see the module)."""

    def __init__(
        self, loader: Callable[[], Credentials], now: Callable[[], float] = time.time
    ) -> None:
        self._loader = loader
        self._now = now
        self.current = loader()

    def due(self) -> bool:
        creds, now = self.current, self._now()
        return (creds.refresh_after is not None and now >= creds.refresh_after) or (
            creds.expires is not None and now >= creds.expires - EXPIRY_MARGIN_SECONDS
        )

    def refresh(self) -> Credentials:
        """Load again; on failure keep what there is (the old token may still work)."""
        try:
            self.current = self._loader()
        except (CredentialsError, OSError) as err:
            log.warning("could not load fresh API credentials, keeping the current ones: %s", err)
            self.current = replace(
                self.current, expires=None, refresh_after=self._now() + REREAD_SECONDS
            )
        return self.current


def source(kubeconfig: str | None = None) -> Source:
    """Credentials as `load` finds them, kept fresh."""
    return Source(lambda: load(kubeconfig))
