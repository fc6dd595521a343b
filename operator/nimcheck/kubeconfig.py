"""The API server address and credentials a kubectl plugin gets from the user's kubeconfig.

kubectl hands a plugin no credentials, only the environment (KUBECONFIG) and the flags it was
given (https://kubernetes.io/docs/tasks/extend-kubectl/kubectl-plugins/), so the plugin reads
the kubeconfig itself. The official client's loader does the reading: it merges the
colon-separated KUBECONFIG list, resolves inline certificate data, and runs exec credential
plugins (`aws eks get-token`, `oci ce cluster generate-token`), which is how EKS and OKE users
authenticate. What it produces is turned into plain httpx settings here, because every request
the checks send, proxied or not, goes through one httpx client.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nimcheck.errors import EXIT_USAGE, FatalError

DEFAULT_KUBECONFIG = "~/.kube/config"


@dataclass(frozen=True)
class ApiAccess:
    """Where the API server is and how to authenticate to it."""

    server: str
    """Base URL without a trailing slash, e.g. https://203.0.113.10:6443."""
    context: str
    user: str
    namespace: str
    """The context's namespace, or "default" (what kubectl uses without -n)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Authorization, when the user authenticates with a token or basic auth."""
    verify: ssl.SSLContext | bool = True
    """TLS settings: the cluster's CA and the user's client certificate, if any."""


def kubeconfig_location(flag: str | None, environ: Mapping[str, str]) -> str:
    """--kubeconfig, else $KUBECONFIG (possibly a list), else ~/.kube/config, as kubectl does."""
    if flag:
        return flag
    env = environ.get("KUBECONFIG", "").strip()
    return env or str(Path(DEFAULT_KUBECONFIG).expanduser())


def load_access(location: str, context: str | None = None) -> ApiAccess:
    """Read the kubeconfig; any problem with it is a FatalError naming the file and the fault."""
    paths = [Path(p).expanduser() for p in location.split(os.pathsep) if p]
    if not any(p.is_file() for p in paths):
        raise FatalError(
            f"no kubeconfig at {location} (give --kubeconfig, set KUBECONFIG, "
            "or use --endpoint with --model and no NAME)",
            EXIT_USAGE,
        )
    # Imported here: with --endpoint and no NAME the command never needs the client.
    from kubernetes import client, config

    try:
        contexts, current = _contexts([p for p in paths if p.is_file()])
        chosen = _choose(contexts, current, context, location)
        cfg = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=location,
            context=chosen["name"],
            client_configuration=cfg,
            persist_config=False,
        )
    except FatalError:
        raise
    except Exception as err:  # the loader raises many kinds: ConfigException, YAMLError, ...
        which = f" (context {context})" if context else ""
        problem = " ".join(str(err).split())
        raise FatalError(
            f"cannot use kubeconfig {location}{which}: {problem}", EXIT_USAGE
        ) from None
    details: Mapping[str, Any] = chosen.get("context") or {}
    try:
        verify = _tls(cfg)
    except (OSError, ssl.SSLError) as err:
        raise FatalError(
            f"cannot use the TLS files of context {chosen['name']} in {location}: {err}",
            EXIT_USAGE,
        ) from None
    return ApiAccess(
        server=str(cfg.host).rstrip("/"),
        context=str(chosen["name"]),
        user=str(details.get("user") or ""),
        namespace=str(details.get("namespace") or "default"),
        headers=_auth_headers(cfg),
        verify=verify,
    )


def _contexts(paths: list[Path]) -> tuple[list[dict[str, Any]], str | None]:
    """Contexts of all files and the current-context, merged as kubectl merges them: the first
    file to name a context, or to set current-context, wins."""
    contexts: dict[str, dict[str, Any]] = {}
    current: str | None = None
    for path in paths:
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{path} is not a kubeconfig (a YAML mapping)")
        for item in doc.get("contexts") or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                contexts.setdefault(item["name"], item)
        if current is None and doc.get("current-context"):
            current = str(doc["current-context"])
    return list(contexts.values()), current


def _choose(
    contexts: list[dict[str, Any]], current: str | None, wanted: str | None, location: str
) -> dict[str, Any]:
    names = ", ".join(str(c["name"]) for c in contexts) or "none"
    name = wanted or current
    if name is None:
        raise FatalError(
            f"{location} sets no current-context; give --context (contexts: {names})", EXIT_USAGE
        )
    for item in contexts:
        if item["name"] == name:
            return item
    flag = "context" if wanted else "current-context"
    raise FatalError(f"{flag} {name!r} is not in {location} (contexts: {names})", EXIT_USAGE)


def _auth_headers(cfg: Any) -> dict[str, str]:
    """The Authorization header the official client would send (token, exec plugin, basic)."""
    headers: dict[str, str] = {}
    bearer = cfg.auth_settings().get("BearerToken")
    if bearer and bearer.get("value"):
        headers["Authorization"] = str(bearer["value"])
    elif cfg.username or cfg.password:
        basic = cfg.get_basic_auth_token()
        if basic:
            headers["Authorization"] = str(basic)
    return headers


def _tls(cfg: Any) -> ssl.SSLContext:
    if cfg.verify_ssl:
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return context
