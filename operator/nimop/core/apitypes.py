"""API types that more than one resource embeds: the NIM image, container resources, the proxy
and its CA bundle, and the status condition. Pure models, no I/O.

Each resource's `models.py` composes these into its spec, so `kubectl explain` reads the same
words under `nimcache.spec.proxy` as under any other resource's `proxy`, and the operator renders
them the same way (`proxy_env`, `ca_bundle_volume`). Kubernetes syntax (names, label keys,
tolerations, integer widths) comes from `core.k8s`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from nimop.core import k8s
from nimop.core.k8s import INT64_MAX, Rule
from nimop.core.meta import ObjectRef, object_ref

# Resource quantities (k8s.io/apimachinery/pkg/api/resource/quantity.go, the CRD pattern
# kubebuilder emits for resource.Quantity).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
QUANTITY_MAX_LENGTH = 64
# ConfigMap and Secret keys (k8s.io/apimachinery validation.IsConfigMapKey).
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
REPOSITORY_PATTERN = r"^[^\s:@/]+((:[0-9]+)?(/[^\s:@/]+)+)?$"
PROXY_MAX_LENGTH = 2048

_QUANTITY = re.compile(QUANTITY_PATTERN)


def _quantity(value: int | str) -> int | str:
    """The CRD schema enforces this at the API server; the same check here makes offline
    rendering and unit tests refuse what `kubectl apply` would."""
    if isinstance(value, int):
        if not 0 <= value <= INT64_MAX:
            raise ValueError(f"must be between 0 and {INT64_MAX}")
        return value
    if len(value) > QUANTITY_MAX_LENGTH:
        raise ValueError(f"must be at most {QUANTITY_MAX_LENGTH} characters")
    if not _QUANTITY.fullmatch(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 500m, 8, 16Gi or 1.5T")
    return value


Quantity = Annotated[
    int | str,
    Field(union_mode="left_to_right"),
    AfterValidator(_quantity),
    # pattern and maxLength constrain only strings, minimum and maximum only numbers, as JSON
    # Schema defines them; the API server allows no typed anyOf branches beside int-or-string.
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
            "maxLength": QUANTITY_MAX_LENGTH,
            "minimum": 0,
            "maximum": INT64_MAX,
        }
    ),
]
ObjectName = k8s.DNSSubdomain
ConfigKey = Annotated[str, Field(min_length=1, max_length=253, pattern=CONFIG_KEY_PATTERN)]
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
RESOURCE_NAME_MESSAGE = (
    "resource names are cpu, memory, ephemeral-storage, hugepages-<size>, or an extended "
    "resource with a domain prefix (nvidia.com/gpu, example.com/device)"
)
_LABEL_KEY = re.compile(k8s.LABEL_KEY_PATTERN)


def _resource_name(name: str) -> str:
    """Container resource names as pkg/apis/core/validation accepts them (standard, hugepages,
    or a domain-prefixed extended resource)."""
    if not (
        name in STANDARD_RESOURCES
        or name.startswith("hugepages-")
        or ("/" in name and _LABEL_KEY.fullmatch(name) and len(name) <= k8s.MAX_KEY)
    ):
        raise ValueError(f"{name[:80]!r}: {RESOURCE_NAME_MESSAGE}")
    return name


ResourceMap = Annotated[
    dict[Annotated[str, AfterValidator(_resource_name)], Quantity],
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'] || "
                    "k.startsWith('hugepages-') || (k.contains('/') && "
                    f"k.matches({k8s.raw(k8s.LABEL_KEY_PATTERN)}) && "
                    f"k.matches({k8s.raw(k8s.KEY_LENGTHS_PATTERN)})))",
                    "message": RESOURCE_NAME_MESSAGE,
                }
            ]
        }
    ),
]


class Model(k8s.Strict):
    """Spec models: unknown fields refused, camelCase, frozen, `rules` checked on both sides.

    Being frozen (hence hashable), a default given as an instance (`Field(default=Probes())`)
    is shared by every object that leaves it out, not copied: a thousand parsed specs cost
    half the memory they would with `default_factory`."""


class StatusModel(BaseModel):
    """Status models read what is stored leniently: an older operator may have written it."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
    )


# -- the image ----------------------------------------------------------------------------------


class Image(Model):
    """The NIM container image: a tag, a digest, or both (the digest then decides what runs)."""

    rules = (
        Rule(
            "has(self.tag) || has(self.digest)",
            "set image.tag, image.digest, or both",
            lambda i: i.tag is not None or i.digest is not None,
        ),
    )

    repository: str = Field(min_length=1, max_length=512, pattern=REPOSITORY_PATTERN)
    """Image repository, e.g. nvcr.io/nim/meta/llama-3.1-8b-instruct."""
    tag: str | None = Field(default=None, max_length=128, pattern=TAG_PATTERN)
    """Image tag, e.g. 1.3.3."""
    digest: str | None = Field(default=None, max_length=71, pattern=DIGEST_PATTERN)
    """Pin the image by content: sha256:<64 hex digits>. The reference becomes
    repository@digest (or repository:tag@digest with a tag)."""
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """When the kubelet pulls the image. Default: IfNotPresent."""

    @property
    def reference(self) -> str:
        tagged = f"{self.repository}:{self.tag}" if self.tag else self.repository
        return f"{tagged}@{self.digest}" if self.digest else tagged


# -- container resources ------------------------------------------------------------------------


class Resources(Model):
    """Requests and limits of a container, as in core/v1 (cpu, memory, ephemeral-storage, ...)."""

    requests: ResourceMap = Field(default_factory=dict, max_length=16)
    """Minimum resources, e.g. {cpu: "1", memory: 4Gi}."""
    limits: ResourceMap = Field(default_factory=dict, max_length=16)
    """Maximum resources, e.g. {memory: 8Gi}."""


# -- proxy and CA bundle ------------------------------------------------------------------------


class CABundle(Model):
    """A PEM bundle of CA certificates in a ConfigMap of the same namespace, e.g. the
    certificate of a TLS-inspecting HTTPS proxy."""

    config_map_name: ObjectName
    """Name of the ConfigMap. While it does not exist the resource is
    Stalled/ConfigMapNotFound and nothing is changed."""
    key: ConfigKey = "ca.crt"
    """Key in the ConfigMap holding the PEM certificates. Default: ca.crt."""


ProxyURL = Annotated[str, Field(min_length=1, max_length=PROXY_MAX_LENGTH)]


class Proxy(Model):
    """An HTTP(S) proxy for the NIM's downloads from NGC (api.ngc.nvidia.com,
    xfiles.ngc.nvidia.com, authn.nvidia.com) and Hugging Face. Set as HTTP_PROXY, HTTPS_PROXY
    and NO_PROXY, in upper and lower case, as the download tooling reads either."""

    http_proxy: ProxyURL | None = None
    """Proxy for plain HTTP requests, e.g. http://proxy.example.com:3128."""
    https_proxy: ProxyURL | None = None
    """Proxy for HTTPS requests (NGC and Hugging Face are HTTPS), e.g.
    http://proxy.example.com:3128."""
    no_proxy: ProxyURL | None = None
    """Comma-separated hosts, domains and CIDRs reached directly, e.g.
    .svc,.cluster.local,10.0.0.0/8."""
    ca_bundle: CABundle | None = None
    """CA certificates to trust in addition to the image's own, for a proxy that re-signs TLS
    with its own certificate authority."""


PROXY_VARIABLES = (
    ("HTTP_PROXY", "http_proxy"),
    ("HTTPS_PROXY", "https_proxy"),
    ("NO_PROXY", "no_proxy"),
)
CA_BUNDLE_VOLUME = "proxy-ca"
CA_BUNDLE_DIR = "/etc/nimop/proxy-ca"
CA_BUNDLE_FILE = "ca.crt"
CA_BUNDLE_PATH = f"{CA_BUNDLE_DIR}/{CA_BUNDLE_FILE}"


# The proxy's CA is trusted in addition to the image's own roots: a shell step appends it to the
# image's system bundle (Debian/Ubuntu or RHEL path) into "$bundle", without root, and OpenSSL
# (SSL_CERT_FILE), Python requests (REQUESTS_CA_BUNDLE) and curl (CURL_CA_BUNDLE) are pointed
# at the result. POSIX sh, no "$$" or "$(NAME)" (the kubelet expands those in command and args).
CA_MERGE = r"""
if [ -n "${NIMOP_PROXY_CA:-}" ]; then
  : > "$bundle"
  for system in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [ -r "$system" ]; then
      cat "$system" >> "$bundle"
      break
    fi
  done
  cat "$NIMOP_PROXY_CA" >> "$bundle"
fi
"""
TRUST_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
CA_PROXY_ENV = "NIMOP_PROXY_CA"


def trust_env(bundle: str) -> list[dict[str, str]]:
    """Point every TLS stack a NIM uses at a merged CA bundle."""
    return [{"name": name, "value": bundle} for name in TRUST_VARIABLES]


def proxy_env(proxy: Proxy | None) -> list[dict[str, str]]:
    """HTTP_PROXY, HTTPS_PROXY and NO_PROXY with their lower-case twins, for what is set.
    Python's urllib and requests read either spelling; curl and Go's net/http read
    lower-case http_proxy only, so both are set."""
    if proxy is None:
        return []
    values = (proxy.http_proxy, proxy.https_proxy, proxy.no_proxy)
    return [
        {"name": name, "value": value}
        for (upper, lower), value in zip(PROXY_VARIABLES, values, strict=True)
        if value is not None
        for name in (upper, lower)
    ]


def ca_bundle_volume(proxy: Proxy | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ConfigMap key as the file CA_BUNDLE_PATH (volumes, volume mounts), read-only."""
    if proxy is None or proxy.ca_bundle is None:
        return [], []
    bundle = proxy.ca_bundle
    volume = {
        "name": CA_BUNDLE_VOLUME,
        "configMap": {
            "name": bundle.config_map_name,
            "items": [{"key": bundle.key, "path": CA_BUNDLE_FILE}],
        },
    }
    mount = {"name": CA_BUNDLE_VOLUME, "mountPath": CA_BUNDLE_DIR, "readOnly": True}
    return [volume], [mount]


# -- status -------------------------------------------------------------------------------------


class Condition(StatusModel):
    """A condition in the Kubernetes convention, readable by kubectl, kstatus and Argo CD."""

    type: str
    """Ready, Reconciling, Stalled, ..."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str
    """A CamelCase word a program can switch on."""
    message: str = ""
    """What a person needs to know."""
    last_transition_time: str
    """When status last changed (reason and message may change without it)."""
    observed_generation: int = 0
    """metadata.generation the condition was computed for."""


# -- the object, parsed once at the door --------------------------------------------------------

SpecT = TypeVar("SpecT", bound=BaseModel)
StatusT = TypeVar("StatusT", bound=StatusModel)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def describe_errors(err: ValidationError) -> str:
    """The first errors, each with its field path; a tenant's huge key or value is clipped so
    the message fits a condition."""
    parts = []
    for e in err.errors()[:8]:
        where = ".".join(_clip(str(p), 80) for p in e["loc"])
        message = _clip(str(e["msg"]).removeprefix("Value error, "), 400)
        parts.append(f"spec.{where}: {message}" if where else f"spec: {message}")
    return "; ".join(parts)


def parse_status(status_type: type[StatusT], raw: dict[str, Any] | None) -> StatusT:
    """Lenient: a status that cannot be read counts as empty rather than wedging every pass."""
    if raw:
        try:
            return status_type.model_validate(raw)
        except (ValueError, RecursionError):
            pass
    return status_type()


@dataclass(frozen=True)
class Parsed(Generic[SpecT, StatusT]):
    """A watched object as its pipeline sees it: metadata, the spec (or why it cannot be read),
    and the status the operator wrote last. Subclasses name their status model in STATUS.

    The status is kept as stored, as compact JSON, and parsed when a pass asks for it: between
    passes a thousand objects wait, and their statuses as JSON text cost a fifth of them as
    dicts, and a tenth of them parsed."""

    STATUS: ClassVar[type[StatusModel]]

    ref: ObjectRef
    spec: SpecT | None
    invalid: str | None
    stored_status: bytes

    @property
    def raw_status(self) -> dict[str, Any]:
        """The stored status as it is, for computing the status patch."""
        return stored_dict(self.stored_status)

    @property
    def status(self) -> StatusT:
        return cast(StatusT, parse_status(self.STATUS, self.raw_status))


def read(
    body: dict[str, Any], spec_type: type[SpecT]
) -> tuple[ObjectRef, SpecT | None, str | None, bytes]:
    """(ref, spec, why the spec cannot be read, stored status) of a body, for `Parsed`. Never
    raises for a body the API server sent: a spec that cannot be read is reported, not
    raised."""
    spec: SpecT | None = None
    invalid: str | None = None
    try:
        spec = spec_type.model_validate(body.get("spec") or {})
    except ValidationError as err:
        invalid = describe_errors(err)
    except RecursionError:
        invalid = "spec is nested too deeply to read"
    except (TypeError, ValueError) as err:
        invalid = f"spec cannot be read: {err}"
    return object_ref(body), spec, invalid, compact_status(body)


def compact_status(body: dict[str, Any]) -> bytes:
    """A body's status as `Parsed.stored_status` keeps it."""
    raw = body.get("status")
    if not isinstance(raw, dict) or not raw:
        return b""
    try:
        return json.dumps(raw, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError):
        return b""


def stored_dict(stored: bytes) -> dict[str, Any]:
    """The stored status as the API server holds it (see `read`)."""
    raw = json.loads(stored) if stored else {}
    return raw if isinstance(raw, dict) else {}
