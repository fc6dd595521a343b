"""Spec -> render parameters: every default and derived value (nimop.params)."""

from __future__ import annotations

from typing import Any

import pytest

from nimop import names
from nimop.core.meta import object_ref
from nimop.nimservice import models, params

MINIMAL: dict[str, Any] = {
    "image": {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3"},
    "model": "meta/llama-3.1-8b-instruct",
    "authSecret": "ngc-api",
}
REF = object_ref(
    {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "llama", "namespace": "nim", "uid": "uid-1"},
    }
)
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def spec(**fields: Any) -> models.NimServiceSpec:
    """A NimServiceSpec from the minimal spec plus camelCase fields, as a manifest writes them."""
    return models.NimServiceSpec.model_validate({**MINIMAL, **fields})


def build(
    strategy: params.Strategy = params.SURGE, assert_replicas: bool = True, **fields: Any
) -> params.Params:
    return params.build(spec(**fields), REF, strategy, assert_replicas=assert_replicas)


# -- identity --------------------------------------------------------------------------------------


def test_identity_comes_from_the_object_and_names() -> None:
    p = build()
    assert (p.name, p.namespace) == ("llama", "nim")
    assert p.deployment_name == p.service_name == "llama"
    assert p.labels == names.common_labels("llama")
    assert p.selector == names.selector_labels("llama")
    assert p.image == "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3"
    assert p.pull_policy == "IfNotPresent"
    assert p.readiness_gate == names.READINESS_GATE


def test_owner_reference_makes_the_nimservice_the_controller() -> None:
    assert build().owner == {
        "apiVersion": "nimop.dev/v1alpha1",
        "kind": "NimService",
        "name": "llama",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_image_pull_secrets_become_local_object_references() -> None:
    p = build(imagePullSecrets=["ngc-secret", "other"])
    assert p.image_pull_secrets == [{"name": "ngc-secret"}, {"name": "other"}]


# -- scheduling ------------------------------------------------------------------------------------


def test_unset_tolerations_tolerate_the_gpu_taint() -> None:
    assert build().tolerations == [GPU_TOLERATION]


def test_empty_tolerations_mean_none() -> None:
    assert build(tolerations=[]).tolerations == []


def test_given_tolerations_replace_the_default_and_keep_only_set_fields() -> None:
    p = build(tolerations=[{"key": "dedicated", "operator": "Equal", "value": "nim"}])
    assert p.tolerations == [{"key": "dedicated", "operator": "Equal", "value": "nim"}]


def test_gpu_product_adds_the_gfd_node_selector() -> None:
    p = build(
        gpu={"product": "NVIDIA-H100-80GB-HBM3"},
        nodeSelector={"node.kubernetes.io/instance-type": "BM.GPU.H100.8"},
    )
    assert p.node_selector == {
        "node.kubernetes.io/instance-type": "BM.GPU.H100.8",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    }


def test_no_gpu_product_leaves_node_selector_as_given() -> None:
    assert build().node_selector == {}
    assert build(nodeSelector={"pool": "gpu"}).node_selector == {"pool": "gpu"}


def test_affinity_and_class_names_pass_through() -> None:
    affinity: dict[str, Any] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}
                ]
            }
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app": "nim"}},
                    },
                }
            ]
        },
    }
    p = build(
        affinity=affinity,
        priorityClassName="high",
        runtimeClassName="nvidia",
        serviceAccountName="nim-sa",
    )
    assert p.affinity == affinity
    assert (p.priority_class_name, p.runtime_class_name, p.service_account_name) == (
        "high",
        "nvidia",
        "nim-sa",
    )


# -- resources -------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 4, 8])
def test_gpu_count_is_both_requested_and_limited(count: int) -> None:
    p = build(
        gpu={"count": count}, resources={"requests": {"cpu": "500m"}, "limits": {"memory": 1}}
    )
    assert p.resources == {
        "requests": {"cpu": "500m", "nvidia.com/gpu": count},
        "limits": {"memory": 1, "nvidia.com/gpu": count},
    }


def test_default_gpu_count_is_one_with_cpu_and_memory_requests_so_the_pod_is_burstable() -> None:
    assert build().resources == {
        "requests": {"cpu": 2, "memory": "12Gi", "nvidia.com/gpu": 1},
        "limits": {"nvidia.com/gpu": 1},
    }


@pytest.mark.parametrize(("count", "cpu", "memory"), [(2, 4, "24Gi"), (8, 16, "96Gi")])
def test_default_requests_grow_with_the_gpu_count(count: int, cpu: int, memory: str) -> None:
    requests = build(gpu={"count": count}).resources["requests"]
    assert (requests["cpu"], requests["memory"]) == (cpu, memory)


def test_explicit_resources_win_field_by_field() -> None:
    p = build(resources={"requests": {"cpu": "16500m"}})
    assert p.resources["requests"] == {"cpu": "16500m", "memory": "12Gi", "nvidia.com/gpu": 1}


def test_a_limit_without_a_request_gets_no_default_request() -> None:
    """Kubernetes requests the limit then; a default above it would be refused."""
    p = build(resources={"limits": {"memory": "8Gi"}})
    assert "memory" not in p.resources["requests"]
    assert p.resources["requests"]["cpu"] == 2


def test_zero_gpus_add_no_gpu_resource() -> None:
    p = build(gpu={"count": 0}, resources={"requests": {"cpu": "500m", "memory": "32Gi"}})
    assert p.resources == {"requests": {"cpu": "500m", "memory": "32Gi"}}
    assert build(gpu={"count": 0}).resources == {"requests": {"cpu": 2, "memory": "8Gi"}}


# -- env -------------------------------------------------------------------------------------------


def test_env_starts_with_the_operator_variables_then_user_env_in_order() -> None:
    user = [
        {"name": "NIM_LOG_LEVEL", "value": "DEBUG"},
        {"name": "A_SECRET", "valueFrom": {"secretKeyRef": {"name": "other", "key": "k"}}},
        {"name": "NIM_MAX_MODEL_LEN", "value": "4096"},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    p = build(authSecret="my-ngc", authSecretKey="api-key", env=user)
    assert p.env == [
        {
            "name": "NGC_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "my-ngc", "key": "api-key"}},
        },
        {"name": "NIM_CACHE_PATH", "value": "/opt/nim/.cache"},
        {"name": "NIM_SERVER_PORT", "value": "8000"},
        *user,
    ]


def test_ngc_key_defaults_to_the_ngc_api_key_key() -> None:
    assert build().env[0]["valueFrom"] == {
        "secretKeyRef": {"name": "ngc-api", "key": "NGC_API_KEY"}
    }


@pytest.mark.parametrize(
    ("cache", "path"),
    [
        (None, "/opt/nim/.cache"),
        ({}, "/opt/nim/.cache"),
        ({"mountPath": "/models"}, "/models"),
        ({"size": "100Gi", "mountPath": "/data/cache"}, "/data/cache"),
    ],
)
def test_nim_cache_path_follows_the_cache_mount(cache: dict[str, Any] | None, path: str) -> None:
    p = build(cache=cache)
    assert {"name": "NIM_CACHE_PATH", "value": path} in p.env
    assert {"name": "model-cache", "mountPath": path} in p.volume_mounts


# -- probes and deadlines --------------------------------------------------------------------------


def test_default_probes_hit_the_nim_health_endpoints_on_the_api_port() -> None:
    p = build()
    assert p.startup_probe == {
        "httpGet": {"path": "/v1/health/ready", "port": "api"},
        "initialDelaySeconds": 0,
        "periodSeconds": 10,
        "timeoutSeconds": 1,
        "failureThreshold": 180,
        "successThreshold": 1,
    }
    assert p.readiness_probe is not None
    assert p.liveness_probe is not None
    assert p.readiness_probe["httpGet"] == {"path": "/v1/health/ready", "port": "api"}
    assert p.liveness_probe["httpGet"] == {"path": "/v1/health/live", "port": "api"}
    assert (p.port, p.port_name) == (8000, "api")


def test_a_disabled_probe_is_left_out() -> None:
    p = build(probes={"liveness": {"enabled": False}, "startup": {"enabled": False}})
    assert p.liveness_probe is None
    assert p.startup_probe is None
    assert p.readiness_probe is not None


@pytest.mark.parametrize(
    ("startup", "expected"),
    [
        ({}, 10 * 180 + 600),
        ({"initialDelaySeconds": 30, "periodSeconds": 5, "failureThreshold": 100}, 30 + 500 + 600),
        ({"enabled": False}, 600),
    ],
)
def test_progress_deadline_defaults_to_startup_budget_plus_pull_allowance(
    startup: dict[str, Any], expected: int
) -> None:
    assert build(probes={"startup": startup}).progress_deadline_seconds == expected
    s = spec(probes={"startup": startup})
    assert params.progress_deadline_seconds(s) == expected


def test_progress_deadline_honours_the_rollout_setting() -> None:
    p = build(rollout={"progressDeadlineSeconds": 120}, probes={"startup": {"periodSeconds": 60}})
    assert p.progress_deadline_seconds == 120


# -- volumes ---------------------------------------------------------------------------------------


def test_existing_claim_mounts_that_claim_and_creates_none() -> None:
    p = build(cache={"existingClaim": "nim-model-cache"})
    assert p.volumes[0] == {
        "name": "model-cache",
        "persistentVolumeClaim": {"claimName": "nim-model-cache"},
    }
    assert p.claim is None
    assert p.claim_name is None


def test_cache_size_has_the_operator_create_and_mount_a_claim() -> None:
    p = build(cache={"size": "300Gi"})
    assert p.claim_name == names.cache_claim_name("llama") == "llama-cache"
    assert p.claim == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "300Gi"}},
    }
    assert p.volumes[0] == {
        "name": "model-cache",
        "persistentVolumeClaim": {"claimName": "llama-cache"},
    }


def test_created_claim_takes_storage_class_and_access_mode() -> None:
    p = build(cache={"size": 1000, "storageClassName": "fss", "accessMode": "ReadWriteMany"})
    assert p.claim == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": 1000}},
        "storageClassName": "fss",
    }


@pytest.mark.parametrize("cache", [None, {}, {"mountPath": "/models"}])
def test_no_claim_means_an_empty_dir_cache(cache: dict[str, Any] | None) -> None:
    p = build(cache=cache)
    assert p.volumes[0] == {"name": "model-cache", "emptyDir": {}}
    assert p.claim is None
    assert p.claim_name is None


def test_shm_is_memory_backed_without_a_limit_by_default() -> None:
    p = build()
    assert p.volumes[1] == {"name": "dshm", "emptyDir": {"medium": "Memory"}}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in p.volume_mounts


def test_shm_size_limits_the_memory_backed_shm() -> None:
    p = build(shmSize="16Gi")
    assert p.volumes[1] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}


# -- replicas, disruption, strategy ----------------------------------------------------------------


def test_replicas_are_asserted_by_default() -> None:
    assert build(replicas=3).replicas == 3


def test_replicas_are_left_to_the_autoscaler_when_not_asserted() -> None:
    assert build(assert_replicas=False, replicas=3).replicas is None


@pytest.mark.parametrize(("replicas", "pdb"), [(0, False), (1, False), (2, True), (5, True)])
def test_disruption_budget_only_with_more_than_one_replica(replicas: int, pdb: bool) -> None:
    assert build(replicas=replicas).disruption_budget is pdb


def test_auto_strategy_leaves_the_choice_to_capacity() -> None:
    assert params.requested_strategy(models.RolloutSpec()) is None
    assert params.requested_strategy(models.RolloutSpec(strategy="Auto")) is None


def test_recreate_strategy_is_requested_as_is() -> None:
    strategy = params.requested_strategy(models.RolloutSpec(strategy="Recreate"))
    assert strategy == params.RECREATE
    assert strategy.deployment_strategy() == {"type": "Recreate"}


def test_rolling_update_defaults_to_surge_one_unavailable_zero() -> None:
    strategy = params.requested_strategy(models.RolloutSpec(strategy="RollingUpdate"))
    assert strategy == params.Strategy("RollingUpdate", 1, 0)
    assert strategy.deployment_strategy() == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def test_rolling_update_takes_the_given_surge_and_unavailability() -> None:
    rollout = models.RolloutSpec.model_validate(
        {"strategy": "RollingUpdate", "maxSurge": "25%", "maxUnavailable": 1}
    )
    strategy = params.requested_strategy(rollout)
    assert strategy == params.Strategy("RollingUpdate", "25%", 1)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (
            params.SURGE,
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        ),
        (
            params.ONE_AT_A_TIME,
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        ),
        (params.RECREATE, {"type": "Recreate"}),
    ],
)
def test_built_in_strategies_map_to_deployment_strategies(
    strategy: params.Strategy, expected: dict[str, Any]
) -> None:
    assert build(strategy=strategy).strategy == expected


# -- pod metadata ----------------------------------------------------------------------------------


def test_pod_annotations_carry_the_model_and_keep_karpenter_away() -> None:
    p = build(podAnnotations={"team": "ml"})
    assert p.pod_annotations == {
        "team": "ml",
        "nimop.dev/model": "meta/llama-3.1-8b-instruct",
        "karpenter.sh/do-not-disrupt": "true",
    }


def test_do_not_disrupt_can_be_turned_off() -> None:
    p = build(nodeAutoscaling={"doNotDisrupt": False})
    assert "karpenter.sh/do-not-disrupt" not in p.pod_annotations


def test_pod_labels_merge_user_labels_with_the_operators() -> None:
    p = build(podLabels={"team": "ml"})
    revision = {names.LABEL_REVISION: p.revision}
    assert p.pod_labels == {"team": "ml", **names.common_labels("llama"), **revision}
    assert p.pod_labels[names.LABEL_COMPONENT] == "inference"


def test_reserved_labels_that_get_past_the_schema_still_lose_to_the_operators() -> None:
    """The API server refuses them at apply; an object stored before that rule is still safe."""
    valid = spec()
    smuggled = valid.model_copy(
        update={
            "pod_labels": {names.LABEL_COMPONENT: "mine", names.LABEL_REVISION: "x"},
            "pod_annotations": {names.ANNOTATION_MODEL: "spoofed"},
        }
    )
    p = params.build(smuggled, REF, params.SURGE)
    assert p.pod_labels[names.LABEL_COMPONENT] == "inference"
    assert p.pod_labels[names.LABEL_REVISION] == p.revision
    assert p.pod_annotations[names.ANNOTATION_MODEL] == "meta/llama-3.1-8b-instruct"


def test_security_contexts_are_restricted() -> None:
    p = build(securityContext={"runAsUser": 2000})
    assert p.pod_security_context == {
        "runAsUser": 2000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert p.container_security_context == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_read_only_root_filesystem_gets_writable_scratch_dirs() -> None:
    p = build()
    assert [v["name"] for v in p.volumes[2:]] == [m["name"] for m in p.volume_mounts[2:]]
    assert all(v["emptyDir"] == {} for v in p.volumes[2:])
    assert [m["mountPath"] for m in p.volume_mounts[2:]] == [
        "/tmp",
        "/opt/nim/workspace",
        "/opt/nim/nginx",
        "/opt/nim/generated_configs",
        "/opt/nim/.config",
        "/opt/nim/.triton",
        "/home/nvs",
    ]
    assert set(models.OPERATOR_MOUNTS) == {m["mountPath"] for m in p.volume_mounts[1:]}
    paths = [m["mountPath"] for m in p.volume_mounts]
    assert len(paths) == len(set(paths))


@pytest.mark.parametrize(
    ("image", "reference"),
    [
        ({"tag": "1.3.3"}, "nvcr.io/nim/x:1.3.3"),
        ({"digest": "sha256:" + "a" * 64}, "nvcr.io/nim/x@sha256:" + "a" * 64),
        (
            {"tag": "1.3.3", "digest": "sha256:" + "b" * 64},
            "nvcr.io/nim/x:1.3.3@sha256:" + "b" * 64,
        ),
    ],
)
def test_image_reference_takes_a_tag_a_digest_or_both(
    image: dict[str, str], reference: str
) -> None:
    assert build(image={"repository": "nvcr.io/nim/x", **image}).image == reference


def test_pinning_a_digest_changes_the_revision() -> None:
    tagged = build(image={"repository": "nvcr.io/nim/x", "tag": "1"})
    pinned = build(
        image={"repository": "nvcr.io/nim/x", "tag": "1", "digest": "sha256:" + "c" * 64}
    )
    assert tagged.revision != pinned.revision


def test_a_huge_startup_budget_still_gives_a_valid_progress_deadline() -> None:
    biggest = {"initialDelaySeconds": 86400, "periodSeconds": 3600, "failureThreshold": 10000}
    deadline = build(probes={"startup": biggest}).progress_deadline_seconds
    assert deadline == 86400 + 3600 * 10000 + params.PULL_ALLOWANCE_SECONDS
    assert deadline <= params.INT32_MAX


def test_service_settings_pass_through() -> None:
    p = build(service={"type": "LoadBalancer", "port": 443, "annotations": {"lb": "internal"}})
    assert (p.service_type, p.service_port, p.service_annotations) == (
        "LoadBalancer",
        443,
        {"lb": "internal"},
    )


def test_build_is_pure() -> None:
    s = spec(env=[{"name": "A", "value": "1"}], cache={"size": "1Gi"}, replicas=2)
    assert params.build(s, REF, params.SURGE) == params.build(s, REF, params.SURGE)


# -- NimCache and proxy -----------------------------------------------------------------------

CACHED = {"cache": {"nimCache": {"name": "llama-cache", "profile": "vllm-bf16-tp1"}}}


def test_a_nimcache_is_mounted_read_only_at_the_cache_path() -> None:
    p = params.build(
        spec(**CACHED),
        REF,
        params.SURGE,
        cache=params.CacheMount("llama-cache-nimcache", "models"),
    )
    volume = next(v for v in p.volumes if v["name"] == "model-cache")
    mount = next(m for m in p.volume_mounts if m["name"] == "model-cache")
    assert volume["persistentVolumeClaim"] == {
        "claimName": "llama-cache-nimcache",
        "readOnly": True,
    }
    assert mount == {
        "name": "model-cache",
        "mountPath": "/opt/nim/.cache",
        "readOnly": True,
        "subPath": "models",
    }
    assert {"name": "NIM_MODEL_PROFILE", "value": "vllm-bf16-tp1"} in p.env


def test_without_an_auth_secret_no_ngc_key_reaches_the_pod() -> None:
    raw = {k: v for k, v in MINIMAL.items() if k != "authSecret"}
    s = models.NimServiceSpec.model_validate({**raw, **CACHED})
    p = params.build(s, REF, params.SURGE, cache=params.CacheMount("c"))
    assert all(e["name"] != "NGC_API_KEY" for e in p.env)


def test_an_auth_secret_is_required_without_a_nimcache() -> None:
    raw = {k: v for k, v in MINIMAL.items() if k != "authSecret"}
    with pytest.raises(ValueError, match="authSecret is required unless"):
        models.NimServiceSpec.model_validate(raw)


def test_a_nimcache_brings_its_own_volume() -> None:
    with pytest.raises(ValueError, match=r"cache\.nimCache brings its own volume"):
        spec(cache={"nimCache": {"name": "c"}, "size": "10Gi"})


def test_a_proxy_sets_both_spellings_and_trusts_a_merged_ca_bundle() -> None:
    proxy = {
        "httpsProxy": "http://proxy.example.com:3128",
        "noProxy": ".svc,.cluster.local",
        "caBundle": {"configMapName": "corp-ca"},
    }
    p = build(proxy=proxy)
    env = {e["name"]: e.get("value") for e in p.env}
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://proxy.example.com:3128"
    assert env["NO_PROXY"] == env["no_proxy"] == ".svc,.cluster.local"
    assert "HTTP_PROXY" not in env
    for variable in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        assert env[variable] == params.CA_MERGED_BUNDLE
    [init] = p.init_containers
    assert init["command"][:2] == ["/bin/sh", "-ec"]
    assert init["args"] == [params.CA_MERGED_BUNDLE]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    configmap = next(v for v in p.volumes if "configMap" in v)
    assert configmap["configMap"]["name"] == "corp-ca"


def test_no_proxy_no_init_container() -> None:
    assert build().init_containers == []
