"""Rendering child objects from the templates (nimop.render, manifests/*.yaml.j2).

Golden files: every NimService in examples/*.yaml, rendered with params.SURGE in namespace
"default" with a fixed uid, must match tests/unit/golden/<example-file-stem>__<name>.yaml
(yaml.safe_dump_all, sort_keys=False). After an intended change to params, names or the
templates, regenerate them and review the diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_nimop_render.py -q

Hostile input: free-form strings (newlines with indentation, quotes, Jinja syntax, YAML anchors,
aliases and tags, Unicode line separators, very long text) must land verbatim where they belong
and add no field anywhere.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from nimop import names
from nimop.core import render
from nimop.core.meta import ObjectRef, object_ref
from nimop.nimservice import models, params

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
MANIFESTS = REPO / "manifests"
GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"
UID = "00000000-0000-0000-0000-000000000000"

MINIMAL: dict[str, Any] = {
    "image": {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3"},
    "model": "meta/llama-3.1-8b-instruct",
    "authSecret": "ngc-api",
}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(models.LABEL_VALUE_PATTERN)

Obj = dict[str, Any]


def ref(name: str = "llama", namespace: str = "default") -> ObjectRef:
    return object_ref(
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": name, "namespace": namespace, "uid": UID},
        }
    )


def build(
    raw: Obj | None = None,
    name: str = "llama",
    strategy: params.Strategy = params.SURGE,
    assert_replicas: bool = True,
    templates: Path = MANIFESTS,
) -> params.Params:
    spec = models.NimServiceSpec.model_validate(raw if raw is not None else MINIMAL)
    return params.build(
        spec,
        ref(name),
        strategy,
        assert_replicas=assert_replicas,
        template_fingerprint=render.fingerprint(templates, params.RESOURCE),
    )


def rendered(p: params.Params, templates: Path | None = None) -> list[Obj]:
    return list(render.render(p, params.RESOURCE, templates))


def deployment_of(objects: list[Obj]) -> Obj:
    found = render.find(objects, "Deployment")
    assert found is not None
    return found


def without_hash(annotations: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k != names.ANNOTATION_APPLIED_HASH}


def revision_of(deployment: Obj) -> str | None:
    value = deployment["spec"]["template"]["metadata"]["labels"].get(names.LABEL_REVISION)
    return value if isinstance(value, str) else None


def by_kind(objects: list[Obj]) -> dict[str, Obj]:
    result = {o["kind"]: o for o in objects}
    assert len(result) == len(objects), "one object of each kind"
    return result


def pod_spec(objects: list[Obj]) -> Obj:
    spec: Obj = deployment_of(objects)["spec"]["template"]["spec"]
    return spec


def container(objects: list[Obj]) -> Obj:
    nim: Obj = pod_spec(objects)["containers"][0]
    return nim


# -- golden files ----------------------------------------------------------------------------------


def example_nimservices() -> Iterator[tuple[str, Obj]]:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "NimService":
                yield f"{path.stem}__{doc['metadata']['name']}", doc


EXAMPLES_BY_GOLDEN = dict(example_nimservices())


def render_example(doc: Obj) -> str:
    spec = models.NimServiceSpec.model_validate(doc["spec"])
    meta = {"namespace": "default", "uid": UID, **doc["metadata"]}
    nim_cache = spec.cache.nim_cache if spec.cache else None
    p = params.build(
        spec,
        object_ref({**doc, "metadata": meta}),
        params.SURGE,
        template_fingerprint=render.fingerprint(MANIFESTS, params.RESOURCE),
        cache=params.CacheMount(names.nimcache_claim_name(nim_cache.name)) if nim_cache else None,
    )
    objects = rendered(p)
    return yaml.safe_dump_all(objects, sort_keys=False)


def test_every_example_has_a_nimservice() -> None:
    stems = {key.split("__")[0] for key in EXAMPLES_BY_GOLDEN}
    assert stems == {p.stem for p in EXAMPLES.glob("*.yaml")}


@pytest.mark.parametrize("golden", sorted(EXAMPLES_BY_GOLDEN))
def test_example_renders_as_its_golden_file(golden: str) -> None:
    text = render_example(EXAMPLES_BY_GOLDEN[golden])
    path = GOLDEN / f"{golden}.yaml"
    if UPDATE_GOLDEN:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
        return
    assert path.is_file(), f"{path} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{path} is stale: run with UPDATE_GOLDEN=1 and review"


def test_no_golden_file_is_left_without_its_example() -> None:
    stale = sorted(
        p for p in GOLDEN.glob("*.yaml") if p.name.removesuffix(".yaml") not in EXAMPLES_BY_GOLDEN
    )
    if UPDATE_GOLDEN:
        for path in stale:
            path.unlink()
        return
    assert stale == []


# -- what a spec renders to ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "kinds"),
    [
        ({}, ["Deployment", "Service"]),
        ({"replicas": 2}, ["Deployment", "PodDisruptionBudget", "Service"]),
        ({"cache": {"size": "10Gi"}}, ["Deployment", "PersistentVolumeClaim", "Service"]),
        ({"cache": {"existingClaim": "mine"}}, ["Deployment", "Service"]),
        (
            {"replicas": 3, "cache": {"size": "10Gi"}},
            ["Deployment", "PersistentVolumeClaim", "PodDisruptionBudget", "Service"],
        ),
    ],
)
def test_spec_renders_exactly_the_objects_it_needs(extra: Obj, kinds: list[str]) -> None:
    objects = rendered(build({**MINIMAL, **extra}))
    assert sorted(o["kind"] for o in objects) == kinds
    for obj in objects:
        assert obj["metadata"]["namespace"] == "default"
        assert obj["metadata"]["ownerReferences"] == [build().owner]
        assert obj["metadata"]["labels"] == names.common_labels("llama")


def test_replicas_are_omitted_when_not_asserted() -> None:
    deployment = deployment_of(rendered(build(assert_replicas=False)))
    assert "replicas" not in deployment["spec"]
    asserted = deployment_of(rendered(build({**MINIMAL, "replicas": 3})))
    assert asserted["spec"]["replicas"] == 3


def test_service_routes_to_the_pods_on_the_api_port() -> None:
    objects = by_kind(rendered(build({**MINIMAL, "service": {"port": 443}})))
    service = objects["Service"]
    assert service["spec"]["selector"] == names.selector_labels("llama")
    assert service["spec"]["ports"] == [
        {"name": "api", "port": 443, "targetPort": "api", "protocol": "TCP"}
    ]
    assert pod_spec(list(objects.values()))["readinessGates"] == [
        {"conditionType": "nimop.dev/model-ready"}
    ]


# -- hostile input ---------------------------------------------------------------------------------

HOSTILE = [
    "x\n  hostNetwork: true",
    "x\nhostNetwork: true",
    "}\n      hostNetwork: true\n      x: {",
    '"quoted" and \'single\' and \\" escaped',
    "{{ p.image }}",
    "{% raw %}{{ p.namespace }}{% endraw %}",
    "{# comment #}",
    "&a x",
    "*a",
    "<<: *a",
    "!!python/object/apply:os.system ['true']",
    "!<tag:yaml.org,2002:int> 1",
    "line\u2028separator\u2029paragraph\x85next-line\rreturn",
    "---\nkind: Secret\n",
    "...",
    "# comment",
    "- item",
    "key: value",
    "? complex",
    "[a, b]",
    "{a: b}",
    "null",
    "~",
    "true",
    "0o17",
    "1e3",
    "",
    " \t leading and trailing \t ",
    "back\\slash and \\n that is no newline",
    "\x00\x07\x1b[31m control",
    "émoji 🙂 ünïcode",
    "x\n  hostNetwork: true\n" * 2000,
]
# Strings without whitespace, for fields whose schema forbids it.
HOSTILE_TOKENS = [
    "{{p.image}}",
    "{%raw%}",
    "&a",
    "*a",
    "!!python/object/apply:os.system",
    "\"quoted\"'single'",
    "x#comment",
    "[a,b]",
    "{a:b}",
    "null",
    "---",
    "|",
    ">-",
    "%TAG",
    "`tick`",
    "back\\slash",
    "ünïcode",
    "{{p.image}}" * 23,
]


def fit(value: str, limit: int) -> str:
    """`value` cut to a field's maximum length; fields that must be non-empty get a marker."""
    return (value or "_")[:limit]


def hostile_spec(h: str) -> Obj:
    """A spec with `h` (or as much of it as the field allows) in every free-form string field.
    Keys, names and label values have Kubernetes syntax checked by the schema, so they hold no
    hostile text; they get fixed values here."""
    return {
        **MINIMAL,
        "authSecretKey": fit(h, 253),
        "replicas": 2,
        "env": [
            {"name": "HOSTILE", "value": h[:32768]},
            {
                "name": "FROM_CONFIG",
                "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "key"}},
            },
            {"name": "FROM_FIELD", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "podAnnotations": {"hostile": h[:4096]},
        "podLabels": {"hostile": "value"},
        "nodeSelector": {"pool": "gpu"},
        "service": {"annotations": {"hostile": h[:4096]}},
        "tolerations": [
            {"key": "hostile", "operator": "Equal", "value": "value", "effect": "NoSchedule"}
        ],
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 1,
                        "preference": {
                            "matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]
                        },
                    }
                ]
            }
        },
        "priorityClassName": "high",
        "runtimeClassName": "nvidia",
        "cache": {"size": "1Gi", "storageClassName": "fast", "mountPath": hostile_path(h)},
        "probes": {"readiness": {"path": "/ready"}},
    }


def hostile_path(h: str) -> str:
    return ("/m/" + fit(h, 1020))[:1024]


# Maps whose keys the user chooses: compared exactly, not by shape.
USER_KEYED = {
    "Deployment.spec.template.metadata.annotations",
    "Deployment.spec.template.metadata.labels",
    "Deployment.spec.template.spec.nodeSelector",
    "Service.metadata.annotations",
}


def shape(node: Any, path: str) -> set[str]:
    """Every key path with the type found there; user-keyed maps count as one opaque node."""
    found = {f"{path}:{type(node).__name__}"}
    if path in USER_KEYED:
        return found
    if isinstance(node, dict):
        for key, value in node.items():
            found |= shape(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found |= shape(value, f"{path}[{i}]")
    return found


def shapes(objects: list[Obj]) -> set[str]:
    result: set[str] = set()
    for obj in objects:
        result |= shape(obj, obj["kind"])
    return result


def keys_anywhere(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in keys_anywhere(v)}
    if isinstance(node, list):
        return {k for v in node for k in keys_anywhere(v)}
    return set()


@functools.cache
def render_hostile(h: str) -> list[Obj]:
    """Rendered once per string and shared: tests only read it."""
    return rendered(build(hostile_spec(h)))


@functools.cache
def render_minimal() -> list[Obj]:
    return rendered(build())


def test_hostile_strings_are_valid_spec_values() -> None:
    for h in HOSTILE:
        models.NimServiceSpec.model_validate(hostile_spec(h))
    for token in HOSTILE_TOKENS:
        models.NimServiceSpec.model_validate({**MINIMAL, "model": token})


@pytest.mark.parametrize("h", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_strings_add_no_fields(h: str) -> None:
    benign = render_hostile("benign")
    hostile = render_hostile(h)
    assert [o["kind"] for o in hostile] == [o["kind"] for o in benign]
    assert shapes(hostile) == shapes(benign)
    pod = pod_spec(hostile)
    assert "hostNetwork" not in pod
    assert "hostNetwork" not in {k for k in keys_anywhere(hostile) if k != h and "\n" not in k}


@pytest.mark.parametrize("h", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_strings_land_verbatim_where_they_belong(h: str) -> None:
    objects = by_kind(render_hostile(h))
    deployment, service = objects["Deployment"], objects["Service"]
    template = deployment["spec"]["template"]
    pod, nim = template["spec"], template["spec"]["containers"][0]

    assert nim["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "ngc-api", "key": fit(h, 253)}
    assert nim["env"][1] == {"name": "NIM_CACHE_PATH", "value": hostile_path(h)}
    assert nim["env"][3:] == hostile_spec(h)["env"]
    annotations = template["metadata"]["annotations"]
    assert annotations["hostile"] == h[:4096]
    assert annotations["nimop.dev/model"] == MINIMAL["model"]
    labels = dict(template["metadata"]["labels"])
    labels.pop(names.LABEL_REVISION)
    assert labels == {"hostile": "value", **names.common_labels("llama")}
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert without_hash(service["metadata"]["annotations"]) == {"hostile": h[:4096]}
    assert pod["tolerations"] == hostile_spec(h)["tolerations"]
    assert pod["affinity"] == hostile_spec(h)["affinity"]
    assert {"name": "model-cache", "mountPath": hostile_path(h)} in nim["volumeMounts"]


@pytest.mark.parametrize("token", HOSTILE_TOKENS)
def test_hostile_model_id_lands_verbatim_in_the_model_annotations(token: str) -> None:
    objects = rendered(build({**MINIMAL, "model": token}))
    assert shapes(objects) == shapes(render_minimal())
    deployment = deployment_of(objects)
    assert without_hash(deployment["metadata"]["annotations"]) == {"nimop.dev/model": token}
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {
        "nimop.dev/model": token,
        "karpenter.sh/do-not-disrupt": "true",
    }


@pytest.mark.parametrize("token", [t for t in HOSTILE_TOKENS if ":" not in t])
def test_hostile_image_repository_lands_verbatim_in_the_image(token: str) -> None:
    repository = f"nvcr.io/{token}"
    raw = {**MINIMAL, "image": {"repository": repository, "tag": "1.3.3"}}
    objects = rendered(build(raw))
    assert shapes(objects) == shapes(render_minimal())
    assert container(objects)["image"] == f"{repository}:1.3.3"


@pytest.mark.parametrize("h", HOSTILE, ids=range(len(HOSTILE)))
def test_y_filter_emits_one_line_that_reads_back_as_the_value(h: str) -> None:
    value = {h: [h, {"k": h}], "n": 1, "b": True, "none": None}
    text = render.to_yaml(value)
    assert "\n" not in text
    assert "\r" not in text
    assert yaml.load(str(text), Loader=yaml.CSafeLoader) == value


# -- long and dotted names -------------------------------------------------------------------------

LONG_DOTTED = ".".join(["a" * 61] * 4) + ".abcde"


def all_label_values(obj: Obj) -> list[str]:
    spec = obj.get("spec", {})
    found = list(obj["metadata"].get("labels", {}).values())
    found += list(spec.get("selector", {}).get("matchLabels", {}).values())
    if obj["kind"] == "Service":
        found += list(spec["selector"].values())
    if obj["kind"] == "Deployment":
        found += list(spec["template"]["metadata"]["labels"].values())
    return found


@pytest.mark.parametrize("name", [LONG_DOTTED, "llama-3.1-8b.instruct.v2", "8b"])
def test_any_valid_nimservice_name_renders_valid_child_names_and_labels(name: str) -> None:
    assert len(LONG_DOTTED) == 253
    objects = rendered(build({**MINIMAL, "replicas": 2, "cache": {"size": "1Gi"}}, name=name))
    assert sorted(o["kind"] for o in objects) == [
        "Deployment",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Service",
    ]
    for obj in objects:
        child = obj["metadata"]["name"]
        assert len(child) <= 63, child
        assert DNS1035.match(child), child
        assert obj["metadata"]["ownerReferences"][0]["name"] == name
        for value in all_label_values(obj):
            assert len(value) <= 63, value
            assert LABEL_VALUE.match(value), value


# -- template safety and custom templates ----------------------------------------------------------


@pytest.mark.parametrize(
    "hole",
    [
        "{{ p.image }}",
        "{{ p.replicas }}",
        "{{ 'literal' }}",
        "{{ p.image | y ~ '' }}",
        "{{ p.image | y | trim }}",
        "{{ p.image | y | upper }}",
    ],
)
def test_a_hole_without_the_y_filter_fails_rendering(tmp_path: Path, hole: str) -> None:
    (tmp_path / "nimservice-bad.yaml.j2").write_text(f"kind: ConfigMap\ndata:\n  image: {hole}\n")
    with pytest.raises(render.UnsafeTemplateError, match=r"\| y"):
        rendered(build(), tmp_path)


def test_a_template_using_an_unknown_parameter_fails_naming_it(tmp_path: Path) -> None:
    (tmp_path / "nimservice-bad.yaml.j2").write_text(
        "kind: ConfigMap\ndata: {{ p.no_such_param | y }}\n"
    )
    with pytest.raises(jinja2.UndefinedError, match="no_such_param"):
        rendered(build(), tmp_path)


def test_a_missing_templates_dir_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        rendered(build(), tmp_path / "nope")


SIDECAR = """\
      - name: sidecar
        image: {{ "busybox:1.36" | y }}
        args: {{ ["sleep", "infinity"] | y }}
"""


def test_custom_templates_dir_renders_its_own_additions(tmp_path: Path) -> None:
    custom = tmp_path / "templates"
    shutil.copytree(MANIFESTS, custom)
    deployment_template = custom / "nimservice-deployment.yaml.j2"
    text = deployment_template.read_text()
    anchor = "      volumes: {{ p.volumes | y }}"
    assert anchor in text
    deployment_template.write_text(text.replace(anchor, SIDECAR + anchor))
    (custom / "NOTES.txt").write_text("not a template: {{ p.image }}\n")

    raw = {**MINIMAL, "replicas": 2, "cache": {"size": "1Gi"}}
    shipped = by_kind(rendered(build(raw)))
    mine = by_kind(rendered(build(raw, templates=custom), custom))

    assert sorted(mine) == sorted(shipped)
    containers = mine["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["nim", "sidecar"]
    assert containers[1] == {
        "name": "sidecar",
        "image": "busybox:1.36",
        "args": ["sleep", "infinity"],
    }
    for kind in ("Service", "PodDisruptionBudget", "PersistentVolumeClaim"):
        assert mine[kind] == shipped[kind]
    # Everything else in the Deployment is the shipped rendering; the revision follows the
    # changed templates.
    del containers[1]
    assert revision_of(mine["Deployment"]) != revision_of(shipped["Deployment"])
    for deployment in (mine["Deployment"], shipped["Deployment"]):
        deployment["spec"]["template"]["metadata"]["labels"].pop(names.LABEL_REVISION)
        deployment["metadata"]["annotations"].pop(names.ANNOTATION_APPLIED_HASH)
    assert mine["Deployment"] == shipped["Deployment"]


# -- revisions -------------------------------------------------------------------------------------


def revision(raw: Obj | None = None, **kwargs: Any) -> str:
    found = revision_of(deployment_of(rendered(build(raw, **kwargs))))
    assert found is not None
    return found


def test_deployment_pod_template_carries_its_revision_label() -> None:
    p = build()
    deployment = deployment_of(rendered(p))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels[names.LABEL_REVISION] == p.revision
    assert re.fullmatch(r"[0-9a-f]{10}", labels[names.LABEL_REVISION])
    assert names.LABEL_REVISION not in deployment["spec"]["selector"]["matchLabels"]


def test_same_params_give_the_same_revision() -> None:
    assert revision() == revision()
    assert revision(MINIMAL) == revision(dict(MINIMAL))


@pytest.mark.parametrize(
    "change",
    [
        {"image": {**MINIMAL["image"], "tag": "1.3.4"}},
        {"image": {**MINIMAL["image"], "repository": "nvcr.io/nim/other"}},
        {"env": [{"name": "NIM_LOG_LEVEL", "value": "DEBUG"}]},
        {"resources": {"requests": {"memory": "32Gi"}}},
        {"gpu": {"count": 2}},
        {"model": "meta/llama-3.1-70b-instruct"},
        {"podAnnotations": {"a": "b"}},
        {"shmSize": "16Gi"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_pod_template_changes_give_a_new_revision(change: Obj) -> None:
    assert revision({**MINIMAL, **change}) != revision()


@pytest.mark.parametrize(
    ("change", "kwargs"),
    [
        ({"replicas": 5}, {}),
        ({}, {"assert_replicas": False}),
        ({}, {"strategy": params.RECREATE}),
        ({}, {"strategy": params.ONE_AT_A_TIME}),
        ({"rollout": {"strategy": "Recreate"}}, {}),
        ({"rollout": {"progressDeadlineSeconds": 600, "autoRollback": False}}, {}),
        ({"service": {"port": 9000, "type": "NodePort", "annotations": {"a": "b"}}}, {}),
    ],
    ids=["replicas", "unasserted", "recreate", "one-at-a-time", "rollout", "deadline", "service"],
)
def test_changes_outside_the_pod_template_keep_the_revision(change: Obj, kwargs: Obj) -> None:
    assert revision({**MINIMAL, **change}, **kwargs) == revision()


def test_every_object_carries_the_hash_of_its_content() -> None:
    for obj in rendered(build({**MINIMAL, "replicas": 2})):
        assert obj["metadata"]["annotations"][names.ANNOTATION_APPLIED_HASH] == (
            render.content_hash(obj)
        )


def test_replace_pod_template_swaps_the_template_and_strips_the_pod_template_hash() -> None:
    current = deployment_of(rendered(build()))
    old = deployment_of(rendered(build({**MINIMAL, "image": {**MINIMAL["image"], "tag": "1.0.0"}})))
    from_replica_set = {
        **old["spec"]["template"],
        "metadata": {
            **old["spec"]["template"]["metadata"],
            "labels": {**old["spec"]["template"]["metadata"]["labels"], "pod-template-hash": "x"},
        },
    }
    snapshot = yaml.safe_dump([current, from_replica_set])

    result = render.replace_pod_template(current, from_replica_set)

    assert result["spec"]["template"] == old["spec"]["template"]
    assert "pod-template-hash" not in result["spec"]["template"]["metadata"]["labels"]
    assert revision_of(result) == revision_of(old) != revision_of(current)
    assert {k: v for k, v in result.items() if k not in ("spec", "metadata")} == {
        k: v for k, v in current.items() if k not in ("spec", "metadata")
    }
    assert result["metadata"]["annotations"][names.ANNOTATION_APPLIED_HASH] == (
        render.content_hash(result)
    )
    assert {k: v for k, v in result["spec"].items() if k != "template"} == {
        k: v for k, v in current["spec"].items() if k != "template"
    }
    assert yaml.safe_dump([current, from_replica_set]) == snapshot, "inputs stay untouched"


def test_describe_exposes_every_parameter() -> None:
    p = build()
    described = render.describe(p)
    assert described["deployment_name"] == "llama"
    assert set(described) == set(params.Params.__dataclass_fields__)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1.5, "b": 1e-05, "c": float("inf")},
        {1: "int key"},
        {"k" * 2000: "long key"},
        ["émoji 🙂", "del \x7f"],
        [[[[[[{"deep": True}]]]]]],
        {"plain": ["ascii", 1, True, None, {"nested": "x"}]},
    ],
    ids=["floats", "int-key", "long-key", "non-ascii", "deep", "plain"],
)
def test_y_filter_reads_back_whichever_way_it_writes(value: Any) -> None:
    assert yaml.load(str(render.to_yaml(value)), Loader=yaml.CSafeLoader) == value


def test_params_that_differ_anywhere_render_apart() -> None:
    base = build(MINIMAL)
    other = replace(base, env=[*base.env, {"name": "X", "value": "1"}])
    assert render.plan(base, params.RESOURCE) != render.plan(other, params.RESOURCE)
    assert render.plan(replace(base), params.RESOURCE) == render.plan(base, params.RESOURCE)


def test_a_known_plan_is_only_what_was_rendered() -> None:
    """A pass decides from the known plan whether to render; looking never renders."""
    fresh = replace(build(MINIMAL), env=[{"name": "KNOWN_PLAN", "value": "only after render"}])
    assert render.known_plan(fresh, params.RESOURCE) is None
    assert render.known_plan(fresh, params.RESOURCE) is None
    objects = render.render(fresh, params.RESOURCE)
    assert render.known_plan(fresh, params.RESOURCE) == render.plan_of(objects)
