"""Kubernetes types a custom resource embeds, as strict pydantic models.

Every model here refuses unknown fields and bounds every list, string and map, so the CRD schema
generated from it stores nothing the API server's own types would not hold, and nothing large
enough to hurt: the bounds keep the CEL cost estimate inside the API server's budget and keep a
tenant from storing an affinity nested a thousand levels deep that no client can decode.

Fields, enums and integer widths follow k8s.io/api core/v1 `types.go` (Affinity, NodeSelector,
PodAffinityTerm, Toleration) and apimachinery meta/v1 `types.go` (LabelSelector); the syntax
checks follow k8s.io/apimachinery/pkg/util/validation/validation.go (IsQualifiedName,
IsValidLabelValue, IsDNS1123Subdomain) and kubernetes pkg/apis/core/validation
(ValidateNodeSelectorRequirement, ValidateTolerations). A rule is declared once (`Rule`): its
CEL text is what `kubectl apply` enforces and its Python twin is what the operator checks, so
both refuse the same objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1024
"""The bound for int64 fields: the largest value below 2**63 that a float64 holds exactly. The
API server keeps a schema's `maximum` as a float64, and 2**63 - 1 rounds up to 2**63, which then
wraps to the most negative int64 and refuses every value."""

DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = rf"{DNS1123_LABEL}(\.{DNS1123_LABEL})*"
# Annotation keys are checked lowercased (ValidateAnnotations), so their prefix may be mixed case.
_PREFIX_ANY_CASE = (
    r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*"
)
QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_KEY_PATTERN = rf"^({DNS1123_SUBDOMAIN}/)?{QUALIFIED_NAME}$"
ANNOTATION_KEY_PATTERN = rf"^({_PREFIX_ANY_CASE}/)?{QUALIFIED_NAME}$"
# Part lengths: a prefix of at most 253 characters, a name of at most 63.
KEY_LENGTHS_PATTERN = r"^([^/]{1,253}/)?[^/]{1,63}$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = rf"^{DNS1123_SUBDOMAIN}$"
DNS_LABEL_PATTERN = rf"^{DNS1123_LABEL}$"
MAX_KEY = 253 + 1 + 63
MAX_LABEL_VALUE = 63
MAX_ANNOTATION_VALUE = 4096
"""Per value; Kubernetes caps all of an object's annotations at 256 KiB together."""

_LABEL_KEY = re.compile(LABEL_KEY_PATTERN)
_ANNOTATION_KEY = re.compile(ANNOTATION_KEY_PATTERN)
_KEY_LENGTHS = re.compile(KEY_LENGTHS_PATTERN)


def raw(regex: str) -> str:
    """A regular expression as a CEL raw string literal."""
    assert "'" not in regex
    return f"r'{regex}'"


def key_rule(pattern: str) -> str:
    return f"self.all(k, k.matches({raw(pattern)}) && k.matches({raw(KEY_LENGTHS_PATTERN)}))"


LABEL_KEY_MESSAGE = (
    "keys must be Kubernetes label keys: an optional DNS subdomain prefix of at most 253 "
    "characters and a '/', then a name of at most 63 characters (letters, digits, '-', '_', '.', "
    "starting and ending with a letter or digit)"
)
ANNOTATION_KEY_MESSAGE = LABEL_KEY_MESSAGE.replace("label keys", "annotation keys")


def _key_checker(compiled: re.Pattern[str], message: str) -> Callable[[str], str]:
    def check(key: str) -> str:
        if not (compiled.fullmatch(key) and _KEY_LENGTHS.fullmatch(key)):
            raise ValueError(f"{key[:80]!r}: {message}")
        return key

    return check


LabelKey = Annotated[
    str, AfterValidator(_key_checker(_LABEL_KEY, LABEL_KEY_MESSAGE.replace("keys must", "must")))
]
AnnotationKey = Annotated[
    str,
    AfterValidator(
        _key_checker(_ANNOTATION_KEY, ANNOTATION_KEY_MESSAGE.replace("keys must", "must"))
    ),
]
LabelValue = Annotated[str, Field(max_length=MAX_LABEL_VALUE, pattern=LABEL_VALUE_PATTERN)]
LabelName = Annotated[str, Field(min_length=1, max_length=MAX_KEY, pattern=LABEL_KEY_PATTERN)]
"""A label key as a field value (topologyKey, a requirement's key): the pattern is checked by
both sides; the part lengths by `_key_checker` and the `maxLength`."""
DNSSubdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
DNSLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]


Labels = Annotated[
    dict[LabelKey, LabelValue],
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": key_rule(LABEL_KEY_PATTERN), "message": LABEL_KEY_MESSAGE}
            ]
        }
    ),
]
"""A label map: keys and values with Kubernetes label syntax (bound its size where used)."""
Annotations = Annotated[
    dict[AnnotationKey, Annotated[str, Field(max_length=MAX_ANNOTATION_VALUE)]],
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": key_rule(ANNOTATION_KEY_PATTERN), "message": ANNOTATION_KEY_MESSAGE}
            ]
        }
    ),
]
"""An annotation map: keys with Kubernetes syntax, values of bounded length."""


@dataclass(frozen=True)
class Rule:
    """One rule, twice: `cel` for the API server, `holds` for the operator."""

    cel: str
    message: str
    holds: Callable[[Any], bool]
    field_path: str | None = None

    def as_schema(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


class Strict(BaseModel):
    """Unknown fields refused, camelCase on the wire, immutable, docstrings as descriptions,
    and `rules` enforced on both sides of the API."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )
    rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        target = handler.resolve_ref_schema(json_schema)
        own = cls.__dict__.get("rules", ())
        if own:
            existing = list(target.get("x-kubernetes-validations", []))
            target["x-kubernetes-validations"] = existing + [r.as_schema() for r in own]
        return json_schema

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).__dict__.get("rules", ()):
            if not rule.holds(self):
                raise ValueError(rule.message)
        return self


# -- selectors ------------------------------------------------------------------------------------

SET_OPERATORS = ("In", "NotIn")
EXISTENCE_OPERATORS = ("Exists", "DoesNotExist")


def _values_fit_operator(req: Any) -> bool:
    if req.operator in SET_OPERATORS:
        return len(req.values) > 0
    if req.operator in EXISTENCE_OPERATORS:
        return not req.values
    return len(req.values) == 1 and re.fullmatch(r"-?[0-9]+", req.values[0]) is not None


_VALUES_RULE = Rule(
    "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : "
    "self.operator in ['Exists', 'DoesNotExist'] ? (!has(self.values) || size(self.values) == 0) : "
    "(has(self.values) && size(self.values) == 1 && self.values[0].matches(r'^-?[0-9]+$'))",
    "values must be non-empty for In and NotIn, empty for Exists and DoesNotExist, and one "
    "integer for Gt and Lt",
    _values_fit_operator,
    ".values",
)


NodeSelectorValue = Annotated[
    str, Field(max_length=MAX_LABEL_VALUE, pattern=rf"^-?[0-9]+$|{LABEL_VALUE_PATTERN}")
]
"""A label value, or a (possibly negative) integer for Gt and Lt."""


class NodeSelectorRequirement(Strict):
    """A node label requirement, as in core/v1."""

    rules = (_VALUES_RULE,)

    key: LabelName
    """The node label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    """How the key's value relates to values."""
    values: list[NodeSelectorValue] = Field(default_factory=list, max_length=32)
    """Values for In and NotIn; one integer for Gt and Lt; none for Exists and DoesNotExist."""


class NodeFieldRequirement(Strict):
    """A node field requirement, as in core/v1: only metadata.name is supported."""

    key: Literal["metadata.name"]
    """The node field; only metadata.name."""
    operator: Literal["In", "NotIn"]
    """In or NotIn."""
    values: list[DNSSubdomain] = Field(min_length=1, max_length=1)
    """Exactly one node name."""


class NodeSelectorTerm(Strict):
    """Requirements ANDed together; an empty term matches no node."""

    match_expressions: list[NodeSelectorRequirement] = Field(default_factory=list, max_length=16)
    """Requirements on node labels."""
    match_fields: list[NodeFieldRequirement] = Field(default_factory=list, max_length=4)
    """Requirements on node fields."""


class NodeSelector(Strict):
    """Terms ORed together."""

    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=8)
    """At least one term must match."""


class PreferredSchedulingTerm(Strict):
    """A weighted node preference."""

    weight: int = Field(ge=1, le=100)
    """1 to 100, added to a node's score when preference matches."""
    preference: NodeSelectorTerm
    """The node requirements to prefer."""


class NodeAffinity(Strict):
    """Node affinity, as in core/v1."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    """Nodes the pods must land on."""
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=8
    )
    """Nodes the pods prefer."""


def _expression_values_fit(req: Any) -> bool:
    if req.operator in SET_OPERATORS:
        return len(req.values) > 0
    return not req.values


class LabelSelectorRequirement(Strict):
    """A label requirement, as in meta/v1."""

    rules = (
        Rule(
            "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : "
            "(!has(self.values) || size(self.values) == 0)",
            "values must be non-empty for In and NotIn and empty for Exists and DoesNotExist",
            _expression_values_fit,
            ".values",
        ),
    )

    key: LabelName
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key's value relates to values."""
    values: list[LabelValue] = Field(default_factory=list, max_length=32)
    """Values for In and NotIn; none for Exists and DoesNotExist."""


class LabelSelector(Strict):
    """A label query, as in meta/v1: matchLabels and matchExpressions ANDed."""

    match_labels: Labels = Field(default_factory=dict, max_length=16)
    """Labels that must match exactly."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=16)
    """Label requirements."""


class PodAffinityTerm(Strict):
    """Pods to run near (affinity) or away from (anti-affinity), as in core/v1."""

    rules = (
        Rule(
            "has(self.labelSelector) || ((!has(self.matchLabelKeys) || "
            "size(self.matchLabelKeys) == 0) && (!has(self.mismatchLabelKeys) || "
            "size(self.mismatchLabelKeys) == 0))",
            "matchLabelKeys and mismatchLabelKeys need a labelSelector",
            lambda t: (
                t.label_selector is not None
                or (not t.match_label_keys and not t.mismatch_label_keys)
            ),
        ),
    )

    label_selector: LabelSelector | None = None
    """The pods this term is about; unset matches none."""
    namespaces: list[DNSLabel] = Field(default_factory=list, max_length=16)
    """Namespaces of those pods; empty (and no namespaceSelector) means this pod's namespace."""
    namespace_selector: LabelSelector | None = None
    """Namespaces of those pods, by label."""
    topology_key: LabelName
    """The node label whose value defines "near", e.g. kubernetes.io/hostname."""
    match_label_keys: list[LabelName] = Field(default_factory=list, max_length=16)
    """Pod label keys whose values (from this pod) are added to labelSelector as In."""
    mismatch_label_keys: list[LabelName] = Field(default_factory=list, max_length=16)
    """Pod label keys whose values (from this pod) are added to labelSelector as NotIn."""


class WeightedPodAffinityTerm(Strict):
    """A weighted pod (anti-)affinity preference."""

    weight: int = Field(ge=1, le=100)
    """1 to 100, added to a node's score when the term matches."""
    pod_affinity_term: PodAffinityTerm
    """The term."""


class PodAffinity(Strict):
    """Pod affinity (or anti-affinity), as in core/v1."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, max_length=8
    )
    """Terms every node must satisfy."""
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, max_length=8
    )
    """Terms nodes preferably satisfy."""


class Affinity(Strict):
    """Pod scheduling constraints, as in core/v1 (nodeAffinity, podAffinity, podAntiAffinity)."""

    node_affinity: NodeAffinity | None = None
    """Which nodes the pods may or prefer to land on."""
    pod_affinity: PodAffinity | None = None
    """Pods to run near."""
    pod_anti_affinity: PodAffinity | None = None
    """Pods to run away from."""


# -- tolerations ----------------------------------------------------------------------------------


class Toleration(Strict):
    """A pod toleration, as in core/v1."""

    rules = (
        Rule(
            "has(self.key) && size(self.key) > 0 || "
            "(has(self.operator) && self.operator == 'Exists')",
            "a toleration without a key must use operator Exists",
            lambda t: bool(t.key) or t.operator == "Exists",
        ),
        Rule(
            "!(has(self.operator) && self.operator == 'Exists' && has(self.value) && "
            "size(self.value) > 0)",
            "value must be empty when operator is Exists",
            lambda t: not (t.operator == "Exists" and t.value),
            ".value",
        ),
        Rule(
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerationSeconds needs effect NoExecute",
            lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
            ".tolerationSeconds",
        ),
    )

    key: Annotated[str, Field(max_length=MAX_KEY, pattern=rf"^$|{LABEL_KEY_PATTERN}")] | None = None
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists matches any value; Equal (the default) matches value."""
    value: LabelValue | None = None
    """Taint value, for operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; empty tolerates every effect."""
    toleration_seconds: int | None = Field(default=None, ge=0, le=INT64_MAX)
    """With effect NoExecute: how long the pod stays bound after the taint appears."""
