"""The generated NimService CRD: structural schema, CEL rules, printer columns, write/check."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nimop import crd, names
from nimop.core import k8s
from nimop.nimservice import models

Schema = dict[str, Any]

CRD = crd.crd()
TEXT = crd.render()
VERSION = CRD["spec"]["versions"][0]
ROOT: Schema = VERSION["schema"]["openAPIV3Schema"]
SPEC: Schema = ROOT["properties"]["spec"]


def walk(node: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with a readable path (`.a.b`, `[]` for items, `{}` for map values)."""
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")
    for i, branch in enumerate(node.get("anyOf") or []):
        yield from walk(branch, f"{path}|{i}")


NODES = list(walk(ROOT))


def node_at(path: str) -> Schema:
    return dict(NODES)[path]


# -- structural schema -----------------------------------------------------------------------------


def test_schema_has_many_nodes() -> None:
    assert len(NODES) > 100
    assert ROOT["type"] == "object"
    assert ROOT["required"] == ["spec"]


@pytest.mark.parametrize("key", ["$ref", "$defs", "title", "const", "allOf", "oneOf"])
def test_no_json_schema_only_keywords(key: str) -> None:
    assert [path for path, node in NODES if key in node] == []


def test_additional_properties_is_never_false() -> None:
    assert [p for p, n in NODES if n.get("additionalProperties") is False] == []


def test_every_node_is_typed_or_int_or_string_or_preserved() -> None:
    untyped = [
        path
        for path, node in NODES
        if "type" not in node
        and not node.get("x-kubernetes-int-or-string")
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert untyped == []


def test_int_or_string_nodes_carry_no_type() -> None:
    typed = [p for p, n in NODES if n.get("x-kubernetes-int-or-string") and "type" in n]
    assert typed == []
    assert {p for p, n in NODES if n.get("x-kubernetes-int-or-string")} >= {
        ".spec.shmSize",
        ".spec.cache.size",
        ".spec.resources.requests{}",
        ".spec.resources.limits{}",
        ".spec.rollout.maxSurge",
        ".spec.rollout.maxUnavailable",
    }


def test_properties_and_additional_properties_never_together() -> None:
    both = [p for p, n in NODES if "properties" in n and "additionalProperties" in n]
    assert both == []


def test_no_typed_any_of_branches() -> None:
    typed = [
        p
        for p, n in NODES
        for branch in n.get("anyOf") or []
        if "type" in branch or "nullable" in branch or "default" in branch
    ]
    assert typed == []


def test_only_spec_replicas_has_a_default() -> None:
    defaults = {p: n["default"] for p, n in NODES if "default" in n}
    assert defaults == {".spec.replicas": 1}


SPEC_NODES = [(p, n) for p, n in NODES if p.startswith(".spec")]
INT32_MAX = 2**31 - 1


def test_nothing_in_the_spec_preserves_unknown_fields() -> None:
    """An unknown field anywhere (an affinity nested 1000 levels deep) is pruned or refused."""
    assert [p for p, n in SPEC_NODES if n.get("x-kubernetes-preserve-unknown-fields")] == []


def test_affinity_has_the_structure_of_core_v1() -> None:
    assert set(node_at(".spec.affinity")["properties"]) == {
        "nodeAffinity",
        "podAffinity",
        "podAntiAffinity",
    }
    term = node_at(".spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[]")
    assert set(term["properties"]) == {
        "labelSelector",
        "namespaces",
        "namespaceSelector",
        "topologyKey",
        "matchLabelKeys",
        "mismatchLabelKeys",
    }
    assert term["required"] == ["topologyKey"]
    operator = node_at(
        ".spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[].matchExpressions[].operator"
    )
    assert operator["enum"] == ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    weight = node_at(
        ".spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[].weight"
    )
    assert (weight["minimum"], weight["maximum"]) == (1, 100)


def test_every_list_map_and_string_in_the_spec_is_bounded() -> None:
    """Bounds keep the CEL cost estimate within the API server's budget and bound storage."""
    unbounded = [
        p
        for p, n in SPEC_NODES
        if (n.get("type") == "array" and "maxItems" not in n)
        or (n.get("type") == "object" and "additionalProperties" in n and "maxProperties" not in n)
        or (n.get("type") == "string" and "maxLength" not in n and "enum" not in n)
    ]
    assert unbounded == []


def test_every_integer_in_the_spec_fits_the_kubernetes_field_it_lands_in() -> None:
    too_wide = [
        p
        for p, n in SPEC_NODES
        if (n.get("type") == "integer" or n.get("x-kubernetes-int-or-string"))
        and n.get("maximum", 2**64) > k8s.INT64_MAX
    ]
    assert too_wide == []
    int32_fields = [
        p
        for p, n in SPEC_NODES
        if p.rsplit(".", 1)[-1]
        in (
            "initialDelaySeconds",
            "periodSeconds",
            "timeoutSeconds",
            "failureThreshold",
            "successThreshold",
            "progressDeadlineSeconds",
            "port",
            "weight",
            "runAsUser",
            "runAsGroup",
            "fsGroup",
            "replicas",
            "count",
        )
    ]
    assert len(int32_fields) >= 15
    assert [p for p in int32_fields if node_at(p)["maximum"] > INT32_MAX] == []
    assert node_at(".spec.tolerations[].tolerationSeconds")["maximum"] == k8s.INT64_MAX
    assert float(k8s.INT64_MAX) == k8s.INT64_MAX < 2**63, "exact as the API server's float64"


def test_startup_budget_cannot_overflow_int32() -> None:
    startup = node_at(".spec.probes.startup")["properties"]
    budget = (
        startup["initialDelaySeconds"]["maximum"]
        + startup["periodSeconds"]["maximum"] * startup["failureThreshold"]["maximum"]
        + 600
    )
    assert budget < INT32_MAX


def test_image_pull_secrets_are_a_set() -> None:
    assert node_at(".spec.imagePullSecrets")["x-kubernetes-list-type"] == "set"


def test_env_is_a_map_list_keyed_by_name() -> None:
    env = node_at(".spec.env")
    assert env["x-kubernetes-list-type"] == "map"
    assert env["x-kubernetes-list-map-keys"] == ["name"]
    assert "name" in env["items"]["required"]


def test_spec_requires_image_and_model_and_auth_secret_without_a_nimcache() -> None:
    assert sorted(SPEC["required"]) == ["image", "model"]
    assert any(
        "authSecret is required unless" in rule["message"]
        for rule in SPEC["x-kubernetes-validations"]
    )
    assert "required" not in ROOT["properties"]["status"]


# -- descriptions ----------------------------------------------------------------------------------

SPEC_PROPERTIES = sorted(SPEC["properties"])


def test_spec_properties_match_the_model_fields() -> None:
    aliases = {f.alias for f in models.NimServiceSpec.model_fields.values()}
    assert set(SPEC_PROPERTIES) == aliases


@pytest.mark.parametrize(
    "prop",
    SPEC_PROPERTIES,
)
def test_every_spec_property_has_a_description(prop: str) -> None:
    description = SPEC["properties"][prop].get("description", "")
    assert description.strip(), f"kubectl explain nimservice.spec.{prop} prints nothing"


def test_descriptions_are_reflowed_paragraphs() -> None:
    for path, node in NODES:
        text = node.get("description")
        if text is None:
            continue
        assert text == text.strip(), path
        assert "\n" not in text.replace("\n\n", ""), f"{path}: raw newline in {text!r}"
        assert "\n\n\n" not in text, path
        assert "  " not in text, f"{path}: source indentation left in {text!r}"


def test_multi_paragraph_docstrings_keep_their_paragraphs() -> None:
    assert "\n\n" in node_at(".spec.cache")["description"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("one line", "one line"),
        ("wrapped\n    at source\n    width", "wrapped at source width"),
        ("para one\n  cont.\n\n  para two", "para one cont.\n\npara two"),
        ("\n\n  leading and trailing  \n\n", "leading and trailing"),
    ],
)
def test_reflow_keeps_paragraphs_only(text: str, expected: str) -> None:
    assert crd.reflow(text) == expected


# -- CEL rules -------------------------------------------------------------------------------------


def rules(path: str) -> list[str]:
    return [r["rule"] for r in node_at(path).get("x-kubernetes-validations", [])]


@pytest.mark.parametrize(
    ("path", "needles"),
    [
        (".spec", ["self.env", "'NGC_API_KEY'", "'NIM_CACHE_PATH'", "'NIM_SERVER_PORT'"]),
        (".spec.env[]", ["has(self.value)", "has(self.valueFrom)"]),
        (
            ".spec.env[].valueFrom",
            ["has(self.secretKeyRef)", "has(self.configMapKeyRef)", "has(self.fieldRef)", "== 1"],
        ),
        (".spec.cache", ["has(self.existingClaim)", "has(self.size)"]),
        (".spec.cache", ["has(self.storageClassName)", "has(self.accessMode)"]),
        (".spec.resources", ["'nvidia.com/gpu' in self.requests", "self.limits"]),
        (".spec.rollout", ["'RollingUpdate'", "has(self.maxSurge)", "has(self.maxUnavailable)"]),
        (
            ".spec",
            [
                "self.podLabels",
                "startsWith('nimop.dev/')",
                "'app.kubernetes.io/instance'",
                "'app.kubernetes.io/name'",
                "'app.kubernetes.io/managed-by'",
                "'app.kubernetes.io/component'",
                "'pod-template-hash'",
            ],
        ),
        (".spec", ["self.podAnnotations", "startsWith('nimop.dev/')"]),
        (".spec", ["self.cache.mountPath", "'/dev/shm'", "'/tmp'", "'/opt/nim/workspace'"]),
        (".spec.image", ["has(self.tag)", "has(self.digest)"]),
        (".spec.securityContext", ["self.runAsUser == 0", "self.runAsNonRoot"]),
        (".spec.tolerations[]", ["self.tolerationSeconds", "'NoExecute'"]),
        (".spec.podLabels", ["self.all(k", "k.matches("]),
        (".spec.podAnnotations", ["self.all(k", "k.matches("]),
        (".spec.nodeSelector", ["self.all(k", "k.matches("]),
        (".spec.service", ["self.annotations", "startsWith('nimop.dev/')"]),
        (".spec.resources.requests", ["'cpu'", "'hugepages-'"]),
    ],
    ids=[
        "reserved-env",
        "value-xor-valueFrom",
        "one-valueFrom-source",
        "claim-xor-size",
        "class-needs-size",
        "no-gpu-in-resources",
        "surge-only-rolling",
        "reserved-pod-labels",
        "reserved-pod-annotations",
        "operator-mounts",
        "tag-or-digest",
        "root-needs-run-as-non-root-false",
        "toleration-seconds",
        "label-keys",
        "annotation-keys",
        "node-selector-keys",
        "reserved-service-annotations",
        "resource-names",
    ],
)
def test_cel_rule_is_present(path: str, needles: list[str]) -> None:
    assert any(all(n in rule for n in needles) for rule in rules(path)), rules(path)


def test_every_cel_rule_has_a_message() -> None:
    for path, node in NODES:
        for rule in node.get("x-kubernetes-validations", []):
            assert set(rule) <= {"rule", "message", "fieldPath"}, path
            assert rule["message"], path


def test_cel_field_paths_name_real_fields() -> None:
    for path, node in NODES:
        for rule in node.get("x-kubernetes-validations", []):
            if "fieldPath" in rule:
                assert rule["fieldPath"].lstrip(".") in node["properties"], (path, rule)


CEL_NODES = sorted(p for p, n in NODES if n.get("x-kubernetes-validations"))


@pytest.mark.parametrize(
    "path",
    CEL_NODES,
)
def test_cel_rules_guard_optional_fields_with_has(path: str) -> None:
    """CEL fails with "no such key" on an unset field: optional fields need has() first."""
    node = node_at(path)
    always_present = set(node.get("required", [])) | {
        name for name, sub in (node.get("properties") or {}).items() if "default" in sub
    }
    for rule in rules(path):
        for field in set(re.findall(r"\bself\.(\w+)\b(?!\()", rule)) - always_present:
            assert f"has(self.{field})" in rule, f"{path}: {rule!r} reads self.{field} unguarded"


# -- names, columns, subresources ------------------------------------------------------------------


def test_names_and_scope() -> None:
    assert CRD["metadata"]["name"] == "nimservices.nimop.dev"
    assert CRD["spec"]["group"] == "nimop.dev"
    assert CRD["spec"]["scope"] == "Namespaced"
    crd_names = CRD["spec"]["names"]
    assert crd_names["kind"] == "NimService"
    assert crd_names["plural"] == "nimservices"
    assert crd_names["singular"] == "nimservice"
    assert crd_names["shortNames"] == ["nims"]
    assert VERSION["name"] == "v1alpha1"
    assert VERSION["served"] is True
    assert VERSION["storage"] is True


def test_printer_columns_show_the_essentials() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert {"Ready", "Model", "Replicas", "Endpoint", "Age"} <= set(columns)
    assert columns["Model"]["jsonPath"] == ".spec.model"
    assert columns["Replicas"]["jsonPath"] == ".status.replicasSummary"
    assert columns["Endpoint"]["jsonPath"] == ".status.endpoint"
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }
    assert '@.type=="Ready"' in columns["Ready"]["jsonPath"]


def test_printer_columns_point_at_schema_fields() -> None:
    for column in VERSION["additionalPrinterColumns"]:
        json_path: str = column["jsonPath"]
        if json_path.startswith(".metadata") or "[?" in json_path:
            continue
        assert json_path in dict(NODES), column


def test_scale_and_status_subresources() -> None:
    assert VERSION["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    assert node_at(".status.replicas")["type"] == "integer"
    assert node_at(".status.selector")["type"] == "string"
    assert node_at(".spec.replicas")["type"] == "integer"


def test_render_is_yaml_of_the_crd_with_a_header() -> None:
    assert TEXT.startswith("# Generated by `make crds`")
    assert yaml.load(TEXT, Loader=yaml.CSafeLoader) == CRD


def test_render_is_deterministic() -> None:
    assert crd.crd() == CRD
    assert crd.render() == TEXT


# -- write / check ---------------------------------------------------------------------------------


@pytest.fixture
def fast_render(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() renders on every call; the text is checked above, so reuse it (YAML dumping is
    slow). The tests using this check main()'s file handling, not rendering."""
    monkeypatch.setattr(crd, "render", lambda: TEXT)


@pytest.mark.usefixtures("fast_render")
def test_write_then_check_passes(tmp_path: Path) -> None:
    dirs = [str(tmp_path / "crds"), str(tmp_path / "charts" / "nimop" / "crds")]
    assert crd.main(["write", *dirs]) == 0
    for d in dirs:
        assert (Path(d) / crd.FILENAME).read_text() == TEXT
    assert crd.main(["check", *dirs]) == 0


@pytest.mark.usefixtures("fast_render")
def test_check_fails_naming_a_modified_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "crds", tmp_path / "chart"
    assert crd.main(["write", str(good), str(bad)]) == 0
    target = bad / crd.FILENAME
    target.write_text(target.read_text().replace("nims", "nim", 1))
    capsys.readouterr()

    assert crd.main(["check", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(target) in err
    assert str(good / crd.FILENAME) not in err


@pytest.mark.usefixtures("fast_render")
def test_check_fails_naming_a_missing_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert crd.main(["check", str(tmp_path)]) == 1
    assert str(tmp_path / crd.FILENAME) in capsys.readouterr().err
    assert not (tmp_path / crd.FILENAME).exists(), "check never writes"


@pytest.mark.usefixtures("fast_render")
@pytest.mark.parametrize("argv", [[], ["write"], ["check"], ["apply", "crds"]])
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert crd.main(argv) == 2
    assert "usage" in capsys.readouterr().err


@pytest.mark.usefixtures("fast_render")
def test_print_writes_the_crd_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert crd.main(["print"]) == 0
    assert capsys.readouterr().out == TEXT


def test_crd_name_matches_names_module() -> None:
    assert f"{names.CRD_NAME}.yaml" == crd.FILENAME
