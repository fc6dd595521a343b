"""The NimService API models: examples, defaults, rejections, lenient status parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from nimop.core import apitypes
from nimop.nimservice import models

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MINIMAL: dict[str, Any] = {
    "image": {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3"},
    "model": "meta/llama-3.1-8b-instruct",
    "authSecret": "ngc-api",
}


def spec(**fields: Any) -> models.NimServiceSpec:
    return models.NimServiceSpec.model_validate({**MINIMAL, **fields})


def example_specs() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "NimService":
                found.append((f"{path.stem}/{doc['metadata']['name']}", doc))
    return found


EXAMPLE_SPECS = example_specs()


def test_examples_exist() -> None:
    assert len(EXAMPLE_SPECS) >= 5


@pytest.mark.parametrize(("name", "doc"), EXAMPLE_SPECS, ids=[n for n, _ in EXAMPLE_SPECS])
def test_every_example_parses(name: str, doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "nimop.dev/v1alpha1"
    parsed = models.NimServiceSpec.model_validate(doc["spec"])
    assert parsed.model == doc["spec"]["model"]
    # What the operator reads back is what Git wrote: a dump by alias round-trips.
    dumped = parsed.model_dump(by_alias=True, exclude_unset=True)
    assert models.NimServiceSpec.model_validate(dumped) == parsed


# -- defaults --------------------------------------------------------------------------------------


def test_spec_defaults() -> None:
    s = spec()
    assert s.image.pull_policy == "IfNotPresent"
    assert s.image.reference == "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3"
    assert s.replicas == 1
    assert s.gpu == models.GPUSpec(count=1, product=None)
    assert s.auth_secret_key == "NGC_API_KEY"
    assert s.tolerations is None
    assert s.cache is None
    assert s.shm_size is None
    assert s.env == []
    assert (s.service.type, s.service.port, s.service.annotations) == ("ClusterIP", 8000, {})


def test_probe_defaults() -> None:
    probes = spec().probes
    assert probes.startup.path == "/v1/health/ready"
    assert (probes.startup.period_seconds, probes.startup.failure_threshold) == (10, 180)
    assert probes.readiness.path == "/v1/health/ready"
    assert (probes.readiness.period_seconds, probes.readiness.failure_threshold) == (10, 3)
    assert probes.liveness.path == "/v1/health/live"
    assert all(p.enabled for p in (probes.startup, probes.readiness, probes.liveness))


def test_security_context_defaults_to_non_root_1000() -> None:
    assert spec().security_context == models.PodSecurity(
        run_as_user=1000, run_as_group=1000, fs_group=1000, run_as_non_root=True
    )


def test_rollout_defaults() -> None:
    rollout = spec().rollout
    assert rollout.strategy == "Auto"
    assert rollout.auto_rollback is True
    assert rollout.max_surge is None
    assert rollout.max_unavailable is None
    assert rollout.progress_deadline_seconds is None


def test_cache_defaults_to_the_nim_cache_path() -> None:
    assert models.CacheSpec().mount_path == "/opt/nim/.cache"


def test_fields_accept_camel_case_and_snake_case() -> None:
    camel = spec(shmSize="1Gi", podLabels={"a": "b"})
    snake = spec(shm_size="1Gi", pod_labels={"a": "b"})
    assert camel == snake


def test_models_are_frozen() -> None:
    s = spec()
    with pytest.raises(ValidationError):
        s.replicas = 3  # type: ignore[misc]


# -- rejections ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"replicas": -1},
        {"replicas": 1025},
        {"gpu": {"count": -1}},
        {"gpu": {"count": 65}},
        {"image": {"repository": "nvcr.io/x", "tag": "1", "pullPolicy": "Sometimes"}},
        {"image": {"repository": "nvcr.io/x", "tag": "1", "pullPolicy": "always"}},
        {"image": {"repository": "nvcr.io/x", "tag": ""}},
        {"image": {"repository": "nvcr.io/x", "tag": "1.3.3 "}},
        {"image": {"repository": "nvcr.io/x", "tag": ":latest"}},
        {"image": {"repository": "nvcr.io/x", "tag": "-dash"}},
        {"image": {"repository": "nvcr.io/x", "tag": "a" * 129}},
        {"image": {"repository": "nvcr.io/x@sha256", "tag": "1"}},
        {"image": {"repository": "nvcr.io/x y", "tag": "1"}},
        {"image": {"repository": "", "tag": "1"}},
        {"model": "meta/llama 3"},
        {"model": "meta/llama\n3"},
        {"model": " meta/llama"},
        {"model": ""},
        {"authSecret": "Not_A_Name"},
        {"imagePullSecrets": ["UPPER"]},
        {"service": {"type": "ExternalName"}},
        {"service": {"port": 0}},
        {"service": {"port": 65536}},
        {"tolerations": [{"operator": "Maybe"}]},
        {"env": [{"name": "1BAD", "value": "x"}]},
        {"env": [{"name": "HAS SPACE", "value": "x"}]},
        {"cache": {"mountPath": "relative/path"}},
        {"cache": {"accessMode": "ReadOnlyMany"}},
        {"rollout": {"strategy": "BlueGreen"}},
        {"rollout": {"progressDeadlineSeconds": 9}},
        {"probes": {"startup": {"failureThreshold": 0}}},
        {"probes": {"readiness": {"path": "no-slash"}}},
        {"gpu": {"product": "has space"}},
    ],
)
def test_invalid_values_are_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        spec(**fields)


@pytest.mark.parametrize(
    "repository", ["registry.local:5000/nim/llama", "localhost:5000/llama", "nvcr.io/nim/meta/x"]
)
def test_repository_may_name_a_registry_port(repository: str) -> None:
    s = spec(image={"repository": repository, "tag": "1.3.3"})
    assert s.image.reference == f"{repository}:1.3.3"


@pytest.mark.parametrize("repository", ["nvcr.io/nim/llama:1", "nvcr.io/x:1.0", "localhost:5000"])
def test_repository_with_a_tag_is_rejected(repository: str) -> None:
    with pytest.raises(ValidationError):
        spec(image={"repository": repository, "tag": "1.3.3"})


@pytest.mark.parametrize(
    "raw",
    [
        {**MINIMAL, "replica": 2},
        {**MINIMAL, "image": {**MINIMAL["image"], "layers": 3}},
        {**MINIMAL, "gpu": {"count": 1, "type": "h100"}},
        {**MINIMAL, "rollout": {"maxSurgePercent": 10}},
        {**MINIMAL, "env": [{"name": "A", "value": "1", "valueFrom2": {}}]},
    ],
    ids=["spec", "image", "gpu", "rollout", "env"],
)
def test_unknown_fields_are_rejected(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        models.NimServiceSpec.model_validate(raw)


@pytest.mark.parametrize("missing", ["image", "model", "authSecret"])
def test_required_fields(missing: str) -> None:
    raw = {k: v for k, v in MINIMAL.items() if k != missing}
    with pytest.raises(ValidationError):
        models.NimServiceSpec.model_validate(raw)


@pytest.mark.parametrize(
    ("value", "as_text"), [(4, "4"), ("4", "4"), ("500m", "500m"), ("32Gi", "32Gi"), ("1.5", "1.5")]
)
def test_quantities_accept_ints_and_strings(value: int | str, as_text: str) -> None:
    s = spec(
        shmSize=value,
        cache={"size": value},
        resources={"requests": {"cpu": value}, "limits": {"memory": value}},
    )
    assert s.shm_size is not None
    assert s.cache is not None
    assert s.cache.size is not None
    for parsed in (
        s.shm_size,
        s.cache.size,
        s.resources.requests["cpu"],
        s.resources.limits["memory"],
    ):
        assert str(parsed) == as_text


@pytest.mark.parametrize(
    "fields",
    [
        {"shmSize": "lots"},
        {"resources": {"requests": {"memory": "32 Gi"}}},
        {"cache": {"size": "1.2.3"}},
        {"rollout": {"strategy": "RollingUpdate", "maxUnavailable": "abc%"}},
        {"rollout": {"strategy": "RollingUpdate", "maxSurge": -1}},
    ],
    ids=["shm", "resources", "cache", "percent", "negative-surge"],
)
def test_invalid_quantities_are_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        spec(**fields)


@pytest.mark.parametrize("value", [1, "1", "25%", "100%"])
def test_surge_and_unavailable_accept_numbers_and_percentages(value: int | str) -> None:
    rollout = models.RolloutSpec.model_validate(
        {"strategy": "RollingUpdate", "maxSurge": value, "maxUnavailable": value}
    )
    assert str(rollout.max_surge) == str(rollout.max_unavailable) == str(value)


def test_env_value_from_sources_parse() -> None:
    s = spec(
        env=[
            {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
            {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ]
    )
    sources = [e.value_from for e in s.env]
    assert all(source is not None for source in sources)
    assert sources[0] is not None
    assert sources[0].secret_key_ref == models.KeyRef(name="s", key="k")


# -- status ----------------------------------------------------------------------------------------

CONDITION = {
    "type": "Ready",
    "status": "True",
    "reason": "Serving",
    "lastTransitionTime": "2024-01-01T00:00:00Z",
}


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {},
        {"conditions": "not-a-list"},
        {"conditions": [{"type": "Ready"}]},
        {"replicas": "many"},
        {"rollout": {"phase": "Exploded", "targetRevision": "abc"}},
        {"rollout": []},
    ],
)
def test_unreadable_status_parses_as_empty(raw: dict[str, Any] | None) -> None:
    assert apitypes.parse_status(models.NimServiceStatus, raw) == models.NimServiceStatus()


def test_status_ignores_unknown_fields() -> None:
    status = apitypes.parse_status(
        models.NimServiceStatus,
        {
            "replicas": 2,
            "writtenByAFutureOperator": {"x": 1},
            "conditions": [{**CONDITION, "severity": "Info"}],
            "rollout": {"phase": "Complete", "targetRevision": "abc", "newField": True},
        },
    )
    assert status.replicas == 2
    assert status.rollout is not None
    assert status.rollout.target_revision == "abc"
    assert status.conditions[0].reason == "Serving"


def test_status_reads_camel_case() -> None:
    status = apitypes.parse_status(
        models.NimServiceStatus,
        {
            "observedGeneration": 3,
            "servingReplicas": 1,
            "replicasSummary": "1/2",
            "servedModels": ["m"],
        },
    )
    assert status.observed_generation == 3
    assert status.serving_replicas == 1
    assert status.replicas_summary == "1/2"
    assert status.served_models == ["m"]


def test_condition_lookup_by_type() -> None:
    stalled = {**CONDITION, "type": "Stalled", "status": "False"}
    status = apitypes.parse_status(models.NimServiceStatus, {"conditions": [CONDITION, stalled]})
    ready = status.condition("Ready")
    assert ready is not None
    assert ready.status == "True"
    found = status.condition("Stalled")
    assert found is not None
    assert found.status == "False"
    assert status.condition("Progressing") is None
    assert models.NimServiceStatus().condition("Ready") is None


# -- bounds, syntax and reserved keys -------------------------------------------------------------

INT32_MAX = 2**31 - 1
DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("image", "reference"),
    [
        ({"tag": "1.3.3"}, "nvcr.io/x:1.3.3"),
        ({"digest": DIGEST}, f"nvcr.io/x@{DIGEST}"),
        ({"tag": "1.3.3", "digest": DIGEST}, f"nvcr.io/x:1.3.3@{DIGEST}"),
    ],
)
def test_images_are_pinned_by_tag_digest_or_both(image: dict[str, str], reference: str) -> None:
    assert spec(image={"repository": "nvcr.io/x", **image}).image.reference == reference


@pytest.mark.parametrize(
    "image",
    [
        {"repository": "nvcr.io/x"},
        {"repository": "nvcr.io/x", "digest": "sha256:abc"},
        {"repository": "nvcr.io/x", "digest": "sha512:" + "a" * 128},
        {"repository": "nvcr.io/x", "digest": DIGEST.upper()},
        {"repository": "nvcr.io/x", "digest": DIGEST + "0"},
    ],
    ids=["neither", "short", "sha512", "upper", "long"],
)
def test_bad_digests_and_no_pin_at_all_are_refused(image: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        spec(image=image)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("probes", "readiness", "timeoutSeconds"), 4294967301),
        (("probes", "readiness", "timeoutSeconds"), 2147483648),
        (("probes", "readiness", "periodSeconds"), 2147483647),
        (("probes", "startup", "failureThreshold"), 10001),
        (("probes", "startup", "initialDelaySeconds"), -1),
        (("probes", "startup", "successThreshold"), 2),
        (("probes", "liveness", "successThreshold"), 2),
        (("rollout", "progressDeadlineSeconds"), 2147483648),
        (("securityContext", "runAsUser"), 2147483648),
        (("securityContext", "fsGroup"), -1),
        (("service", "port"), 65536),
        (("replicas",), 2147483647),
    ],
)
def test_integers_beyond_their_kubernetes_field_are_refused(
    path: tuple[str, ...], value: int
) -> None:
    raw: dict[str, Any] = {}
    node = raw
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(ValidationError):
        spec(**raw)


def test_int32_maximum_is_accepted_where_kubernetes_takes_it() -> None:
    s = spec(
        rollout={"progressDeadlineSeconds": INT32_MAX},
        securityContext={"runAsUser": INT32_MAX, "runAsGroup": INT32_MAX, "fsGroup": INT32_MAX},
    )
    assert s.rollout.progress_deadline_seconds == INT32_MAX


@pytest.mark.parametrize(
    "fields",
    [
        {"podLabels": {"nimop.dev/revision": "x"}},
        {"podLabels": {"app.kubernetes.io/component": "x"}},
        {"podLabels": {"pod-template-hash": "x"}},
        {"podAnnotations": {"nimop.dev/model": "spoofed"}},
        {"service": {"annotations": {"nimop.dev/applied-hash": "x"}}},
    ],
)
def test_reserved_labels_and_annotations_are_refused_not_overwritten(
    fields: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError, match="the operator own"):
        spec(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"podLabels": {"bad key": "x"}},
        {"podLabels": {"ok": "bad value"}},
        {"podAnnotations": {"bad key": "x"}},
        {"nodeSelector": {"a/b/c": "x"}},
        {"priorityClassName": "System-Node-Critical"},
        {"runtimeClassName": "has space"},
        {"serviceAccountName": "UPPER"},
        {"cache": {"size": "1Gi", "storageClassName": "Fast_SSD"}},
        {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}}]},
        {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a b"}}}]},
        {"resources": {"requests": {"gpus": 1}}},
        {"resources": {"limits": {"cpu": "1" * 65}}},
        {"imagePullSecrets": ["a"] * 17},
        {"tolerations": [{"operator": "Exists"}] * 33},
    ],
)
def test_kubernetes_syntax_is_checked(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        spec(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]},
        {
            "env": [
                {
                    "name": "A",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}},
                }
            ]
        },
        {"resources": {"requests": {"hugepages-2Mi": "1Gi", "example.com/fpga": 1}}},
        {"priorityClassName": "inference.high"},
    ],
)
def test_valid_kubernetes_values_pass(fields: dict[str, Any]) -> None:
    spec(**fields)


@pytest.mark.parametrize(
    "mount_path",
    ["/dev/shm", "/tmp", "/opt/nim/workspace", "/", "/a/../b", "/a/./b", "//a", "/a/", "/proc/x"],
)
def test_cache_mount_paths_that_would_clash_or_escape_are_refused(mount_path: str) -> None:
    with pytest.raises(ValidationError, match=r"cache\.mountPath"):
        spec(cache={"mountPath": mount_path})


def test_root_without_run_as_non_root_false_is_a_contradiction() -> None:
    with pytest.raises(ValidationError, match="runAsNonRoot"):
        spec(securityContext={"runAsUser": 0})
    assert spec(securityContext={"runAsUser": 0, "runAsNonRoot": False}).security_context


# -- the door never raises -----------------------------------------------------------------------


def body(raw_spec: Any, status: Any = None) -> dict[str, Any]:
    return {
        "apiVersion": "nimop.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": "n", "namespace": "ns", "uid": "u", "generation": 3},
        "spec": raw_spec,
        "status": status,
    }


def nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["nodeAffinity"] = {}
        node = node["nodeAffinity"]
    return root


@pytest.mark.parametrize(
    "raw_spec",
    [
        None,
        [],
        "spec",
        42,
        {**MINIMAL, "affinity": nested(1000)},
        {**MINIMAL, "replicas": 10**400},
        {**MINIMAL, "podLabels": {"x" * 100_000: "y"}},
        {**MINIMAL, "env": [{"name": "A", "value": {"nested": [1, 2]}}]},
        {**MINIMAL, "image": None},
    ],
    ids=[
        "null",
        "list",
        "string",
        "int",
        "deep",
        "huge-int",
        "huge-key",
        "typed-value",
        "null-image",
    ],
)
def test_parse_reports_an_unreadable_spec_instead_of_raising(raw_spec: Any) -> None:
    parsed = models.parse(body(raw_spec))
    assert parsed.spec is None
    assert parsed.invalid
    assert len(parsed.invalid) < 4000


def test_parse_survives_a_spec_nested_beyond_the_recursion_limit() -> None:
    parsed = models.parse(body({**MINIMAL, "affinity": nested(5000)}))
    assert parsed.spec is None
    assert parsed.invalid


@pytest.mark.parametrize("status", ["x", [], {"conditions": [None, 1]}, {"rollout": "x"}])
def test_parse_treats_an_unreadable_status_as_empty(status: Any) -> None:
    parsed = models.parse(body(MINIMAL, status))
    assert parsed.spec is not None
    assert parsed.status == models.NimServiceStatus()
