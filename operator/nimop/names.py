"""API identity, labels, and names of child objects.

A NimService name is a DNS-1123 subdomain (up to 253 characters, dots allowed), but a Service
name must be a DNS-1035 label (63 characters, no dots, starting with a letter) and label values
are capped at 63 characters. Every child name and label value is derived here, once, so that any
valid NimService name yields valid, stable, collision-resistant children.
"""

from __future__ import annotations

import hashlib
import re

GROUP = "nimop.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "NimService"
PLURAL = "nimservices"
SINGULAR = "nimservice"
SHORT_NAMES = ["nims"]
CRD_NAME = f"{PLURAL}.{GROUP}"
NIMCACHE_KIND = "NimCache"
NIMCACHE_PLURAL = "nimcaches"

FIELD_MANAGER = "nimop"
COMPONENT = "nimop"

# Labels and annotations the operator owns.
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_NIMSERVICE = f"{GROUP}/nimservice"
LABEL_NIMCACHE = f"{GROUP}/nimcache"
LABEL_REVISION = f"{GROUP}/revision"
ANNOTATION_APPLIED_HASH = f"{GROUP}/applied-hash"
ANNOTATION_MODEL = f"{GROUP}/model"
READINESS_GATE = f"{GROUP}/model-ready"

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

MAX_LABEL = 63
_HASH_LEN = 8
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:_HASH_LEN]


def dns_label(name: str, suffix: str = "") -> str:
    """A DNS-1035 label for `name` + `suffix`, at most 63 characters.

    Names that are already valid keep their exact form, so the common case reads naturally
    (`llama` -> `llama`, `llama-cache`). Anything else (dots, a leading digit, too long) is
    normalised and given a hash of the original, so two different NimServices never collide.
    """
    wanted = f"{name}-{suffix}" if suffix else name
    if len(wanted) <= MAX_LABEL and _DNS1035.match(wanted):
        return wanted
    base = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"n-{base}".rstrip("-")
    tail = f"-{_digest(name)}" + (f"-{suffix}" if suffix else "")
    base = base[: MAX_LABEL - len(tail)].rstrip("-")
    return f"{base}{tail}"


def selector_labels(name: str) -> dict[str, str]:
    """Immutable once a Deployment exists: never change what goes in here."""
    return {LABEL_NIMSERVICE: dns_label(name)}


def common_labels(name: str) -> dict[str, str]:
    return {
        LABEL_NAME: "nim",
        LABEL_INSTANCE: dns_label(name),
        LABEL_MANAGED_BY: COMPONENT,
        LABEL_COMPONENT: "inference",
        **selector_labels(name),
    }


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def deployment_name(name: str) -> str:
    return dns_label(name)


def service_name(name: str) -> str:
    return dns_label(name)


def cache_claim_name(name: str) -> str:
    return dns_label(name, "cache")


def nimcache_claim_name(name: str) -> str:
    """The claim a NimCache creates: `-nimcache`, so it never collides with the `-cache` claim
    of a NimService of the same name."""
    return dns_label(name, "nimcache")


def endpoint(name: str, namespace: str, port: int) -> str:
    return f"http://{service_name(name)}.{namespace}.svc.cluster.local:{port}"
