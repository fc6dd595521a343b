"""What the kubelet checks before it can start a container: the image and the environment.

Images are never pulled; a tag word decides whether the "pull" fails, so tests can provoke
ErrImagePull without a registry. The environment is resolved as the kubelet resolves it (literal
values, ConfigMap and Secret references, the downward API, $(VAR) expansion), because a missing
Secret must surface as CreateContainerConfigError exactly where a real cluster would report it.
Secret values are read and passed on as a kubelet does (the simulator checks NGC_API_KEY, so a
bad key must reach it); no env value is ever logged.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from nimlab.kubeapi import KubeAPI, Obj

_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class ConfigError(Exception):
    """The kubelet's CreateContainerConfigError; the message is the kubelet's wording."""


def image_tag(image: str) -> str:
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.partition(":")[2]


def pull_error(image: str) -> str | None:
    """The ErrImagePull message if the image's tag asks for a failed pull, else None."""
    tag = image_tag(image)
    if "no-such-tag" in tag:
        return (
            f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
            f'failed to resolve reference "{image}": {image}: not found'
        )
    if "pull-error" in tag:
        registry = image.split("/", 1)[0]
        return (
            f'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": '
            f'failed to resolve reference "{image}": unexpected status from HEAD request to '
            f"https://{registry}/v2/: 401 Unauthorized"
        )
    return None


class EnvResolver:
    """Resolves one container's environment; each referenced object is fetched once per call."""

    def __init__(self, api: KubeAPI, pod: Obj) -> None:
        self.api = api
        self.pod = pod
        self.namespace: str = pod["metadata"]["namespace"]
        self._objects: dict[tuple[str, str], Obj | None] = {}

    async def resolve(self, container: dict[str, Any]) -> dict[str, str]:
        """Raises ConfigError when a required ConfigMap, Secret or key is missing."""
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            env |= await self._env_from(source)
        for var in container.get("env") or []:
            name = var["name"]
            if "valueFrom" in var:
                value = await self._value_from(var["valueFrom"])
                if value is not None:
                    env[name] = value
            else:
                env[name] = expand(var.get("value") or "", env)
        return env

    async def _object(self, kind: str, name: str) -> Obj | None:
        if (kind, name) not in self._objects:
            plural = "secrets" if kind == "Secret" else "configmaps"
            path = f"/api/v1/namespaces/{self.namespace}/{plural}/{name}"
            self._objects[(kind, name)] = await self.api.get(path)
        return self._objects[(kind, name)]

    async def _keys(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        obj = await self._object(kind, name)
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{kind.lower()} "{name}" not found')
        if kind == "Secret":
            return {k: secret_text(v) for k, v in (obj.get("data") or {}).items()}
        return {k: str(v) for k, v in (obj.get("data") or {}).items()}

    async def _env_from(self, source: dict[str, Any]) -> dict[str, str]:
        prefix = source.get("prefix") or ""
        for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if field in source:
                ref = source[field]
                keys = await self._keys(kind, ref["name"], bool(ref.get("optional")))
                return {f"{prefix}{k}": v for k, v in (keys or {}).items()}
        return {}

    async def _value_from(self, value_from: dict[str, Any]) -> str | None:
        for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            if field in value_from:
                ref = value_from[field]
                optional = bool(ref.get("optional"))
                keys = await self._keys(kind, ref["name"], optional)
                if keys is None:
                    return None
                if ref["key"] not in keys:
                    if optional:
                        return None
                    raise ConfigError(
                        f"couldn't find key {ref['key']} in {kind} {self.namespace}/{ref['name']}"
                    )
                return keys[ref["key"]]
        if "fieldRef" in value_from:
            return field_value(self.pod, value_from["fieldRef"]["fieldPath"])
        return ""


def secret_text(encoded: str) -> str:
    """A Secret value as the process sees it: the decoded bytes, as Go's string(bytes) would."""
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return ""


def field_value(pod: Obj, path: str) -> str:
    """The downward API's fieldRef values that make sense for a simulated pod."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    return ""


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known names are replaced, `$$` escapes, the rest stays."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(repl, value)
