"""NimCache spec -> parameters (nimcache.params): the selector's regular expression, the script's
arguments, the Job's name and which Job a pass wants, the claim, env and volumes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from nimop import names
from nimop.core import apitypes
from nimop.core.meta import object_ref
from nimop.nimcache import models, params
from nimsim import catalog

from .nimcache_cases import JOB_HASH, NAME, job

Obj = dict[str, Any]
BASE: Obj = {
    "image": {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3"},
    "authSecret": "ngc-api",
    "storage": {"size": "50Gi"},
}
# What list-model-profiles of the real llama-3.1-8b-instruct:1.1.2 image lists (the simulator
# keeps that list), plus names in the later NIM conventions (pp, GPU variants, device ids).
LLAMA = [(p.id, p.name) for p in catalog.profiles_for("meta/llama-3.1-8b-instruct")]
LATER = [
    ("1" * 64, "tensorrt_llm-h100_nvl-fp8-tp1-pp1-throughput-2321:10de-lora"),
    ("2" * 64, "tensorrt_llm-h100-bf16-tp2-pp1-latency-2330:10de"),
    ("3" * 64, "vllm-bf16-tp1-pp1"),
    ("4" * 64, "sglang-fp8-tp8-pp1"),
    ("5" * 64, "tensorrt_llm-trtllm_buildable-bf16-tp8-pp2"),
]


def spec(**changes: Any) -> models.NimCacheSpec:
    return models.NimCacheSpec.model_validate({**BASE, **changes})


def ref(generation: int = 1) -> Any:
    return object_ref(
        {
            "apiVersion": names.API_VERSION,
            "kind": models.KIND,
            "metadata": {"name": NAME, "namespace": "ai", "uid": "u-1", "generation": generation},
        }
    )


def selected(selector: Obj, listing: list[tuple[str, str]] = LLAMA) -> list[str]:
    """The names the script keeps: lines `ID NAME` matching include and not exclude (grep -E)."""
    include, exclude = params.selector_patterns(models.ProfileSelector.model_validate(selector))
    lines = [f"{pid} {name}" for pid, name in listing]
    kept = [line for line in lines if re.search(include, line)]
    if exclude:
        kept = [line for line in kept if not re.search(exclude, line)]
    return sorted(line.split(" ", 1)[1] for line in kept)


# -- the selector ----------------------------------------------------------------------------------


def test_selector_engine_gpu_without_lora() -> None:
    assert selected({"engine": "tensorrt_llm", "gpu": "h100", "lora": False}) == [
        "tensorrt_llm-h100-bf16-tp1-throughput",
        "tensorrt_llm-h100-bf16-tp2-latency",
        "tensorrt_llm-h100-fp8-tp1-throughput",
        "tensorrt_llm-h100-fp8-tp2-latency",
    ]


def test_selector_precision_and_tensor_parallelism() -> None:
    assert selected({"engine": "vllm", "precision": "fp16", "tensorParallelism": 1}) == [
        "vllm-fp16-tp1",
        "vllm-fp16-tp1-lora",
    ]


def test_selector_tp_is_a_whole_part() -> None:
    # tp1 must not match tp16 (or anything else that merely starts with tp1).
    listing = [("a" * 64, "vllm-bf16-tp16"), ("b" * 64, "vllm-bf16-tp1")]
    assert selected({"tensorParallelism": 1}, listing) == ["vllm-bf16-tp1"]


def test_selector_lora_only() -> None:
    assert selected({"lora": True, "gpu": "h100"}) == ["tensorrt_llm-h100-bf16-tp1-throughput-lora"]


def test_selector_kind() -> None:
    assert selected({"kind": "latency", "gpu": "l40s"}) == ["tensorrt_llm-l40s-bf16-tp2-latency"]


def test_selector_gpu_never_matches_gpu_independent_profiles() -> None:
    assert [n for n in selected({"gpu": "a10g"}) if n.startswith("vllm")] == []


def test_selector_nothing_matches() -> None:
    assert selected({"gpu": "b200"}) == []


def test_selector_later_naming_conventions() -> None:
    assert selected({"gpu": "h100"}, LATER) == ["tensorrt_llm-h100-bf16-tp2-pp1-latency-2330:10de"]
    assert selected({"gpu": "h100_nvl", "kind": "throughput"}, LATER) == [
        "tensorrt_llm-h100_nvl-fp8-tp1-pp1-throughput-2321:10de-lora"
    ]
    assert selected({"engine": "sglang"}, LATER) == ["sglang-fp8-tp8-pp1"]
    assert selected({"engine": "vllm", "lora": False}, LATER) == ["vllm-bf16-tp1-pp1"]
    assert selected({"precision": "bf16", "tensorParallelism": 8}, LATER) == [
        "tensorrt_llm-trtllm_buildable-bf16-tp8-pp2"
    ]


def test_selector_patterns_are_posix_extended() -> None:
    include, exclude = params.selector_patterns(
        models.ProfileSelector(engine="tensorrt_llm", gpu="h100", lora=False)
    )
    assert include == ("^[0-9a-f]{64} tensorrt_llm(-[^ ()-]+)*-h100(-[^ ()-]+)*$")
    assert exclude == "-lora(-|$)"
    for pattern in (include, exclude):
        assert not re.search(r"\(\?|\\[dswb]|\*\?|\+\?", pattern), "no Perl-only syntax"


def test_describe_selector() -> None:
    sel = models.ProfileSelector(engine="vllm", tensor_parallelism=2, lora=False)
    assert params.describe_selector(sel) == "engine=vllm, tensorParallelism=2, lora=false"


# -- the script and its arguments ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "args"),
    [
        ({}, ["default"]),
        ({"allProfiles": True}, ["all"]),
        ({"profiles": ["vllm-fp16-tp1", "a" * 64]}, ["profiles", "vllm-fp16-tp1", "a" * 64]),
    ],
)
def test_script_arguments(changes: Obj, args: list[str]) -> None:
    assert params.script_arguments(spec(**changes)) == args


def test_selector_arguments() -> None:
    args = params.script_arguments(spec(selector={"engine": "vllm"}))
    assert args[0] == "selector"
    assert args[1].startswith("^[0-9a-f]{64} vllm")
    assert args[2:] == ["", "engine=vllm"]


def test_script_survives_the_kubelets_variable_expansion() -> None:
    """The kubelet turns $$ into $ and replaces $(NAME) in command and args. Arithmetic
    $((...)) is left alone: its "name" starts with "(", which no env variable can."""
    p = params.build(spec(selector={"engine": "vllm", "lora": False}), ref())
    for text in [*p.command, *p.args]:
        assert "$$" not in text
        for at in (m.start() for m in re.finditer(r"\$\(", text)):
            assert text[at + 2] == "(", text[at : at + 20]
    assert p.command[:2] == ["/bin/sh", "-ec"]
    assert p.command[3] == "nimcache"


def test_script_has_no_bashisms() -> None:
    for construct in ("[[", "pipefail", "function ", "local ", "<<<", "==", "echo -e"):
        assert construct not in params.SCRIPT, construct
    assert not re.search(r"(^|\s)\$'", params.SCRIPT), "no $'...' quoting"


# -- names and the Job choice ----------------------------------------------------------------------


def test_job_name_and_claim_name() -> None:
    assert params.job_name("llama", "abc") == "llama-abc"
    assert params.job_name("llama", "abc", 7) == "llama-abc-7"
    assert params.claim_name("llama") == "llama-nimcache"
    long = params.job_name("a" * 253, "0123456789", 12345)
    assert len(long) <= 63
    assert long.endswith("-0123456789-12345")


def test_job_hash_follows_the_pod_not_the_job_settings() -> None:
    base = params.build(spec(), ref()).job_hash
    assert params.build(spec(backoffLimit=9, activeDeadlineSeconds=60), ref()).job_hash == base
    assert params.build(spec(), ref(generation=5)).job_hash == base
    assert params.build(spec(storage={"size": "80Gi"}), ref()).job_hash == base
    for changed in (
        spec(profiles=["vllm-fp16-tp1"]),
        spec(image={"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.4"}),
        spec(storage={"size": "50Gi", "subPath": "x"}),
        spec(proxy={"httpsProxy": "http://p:3128"}),
        spec(resources={"requests": {"cpu": 2}}),
        spec(tolerations=[]),
    ):
        assert params.build(changed, ref()).job_hash != base
    assert params.build(spec(), ref(), template_fingerprint="other").job_hash != base


def test_choose_a_new_job() -> None:
    choice = params.choose_job(NAME, JOB_HASH, 1, [], None)
    assert choice == params.JobChoice(params.job_name(NAME, JOB_HASH), 1)


def test_keep_the_live_job_of_this_spec() -> None:
    running = job(active=1, generation=1)
    assert params.choose_job(NAME, JOB_HASH, 3, [running], None) == params.JobChoice(
        running.name, 1
    )


def test_jobs_of_other_specs_do_not_count() -> None:
    other = job(name="llama-cache-old", active=1)
    other = type(other)(**{**other.__dict__, "labels": {params.LABEL_JOB_HASH: "other"}})
    assert params.choose_job(NAME, JOB_HASH, 1, [other], None).name == params.job_name(
        NAME, JOB_HASH
    )


def test_failed_job_is_retried_after_an_edit() -> None:
    failed = job(failed=4, condition=("Failed", "BackoffLimitExceeded", ""), generation=1)
    same = params.choose_job(NAME, JOB_HASH, 1, [failed], None)
    assert same == params.JobChoice(failed.name, 1), "no edit: stay failed (no retry loop)"
    retried = params.choose_job(NAME, JOB_HASH, 2, [failed], None)
    assert retried == params.JobChoice(params.job_name(NAME, JOB_HASH, 2), 2)
    # The retry is then the live Job of this spec, kept on later passes.
    assert retried.name is not None
    retry = job(name=retried.name, active=1, generation=2)
    assert params.choose_job(NAME, JOB_HASH, 2, [failed, retry], None).name == retried.name


def test_ready_without_its_job_runs_nothing() -> None:
    assert params.choose_job(NAME, JOB_HASH, 4, [], JOB_HASH) == params.JobChoice(None, 4)
    assert params.choose_job(NAME, JOB_HASH, 4, [], "stale").name is not None


# -- claim, env, volumes ---------------------------------------------------------------------------


def test_created_claim_defaults_to_read_write_many() -> None:
    p = params.build(spec(), ref())
    assert p.claim == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "50Gi"}},
    }
    assert p.claim_name == "llama-cache-nimcache"


def test_created_claim_with_class_and_modes() -> None:
    p = params.build(
        spec(storage={"size": "1Ti", "storageClassName": "fss", "accessModes": ["ReadWriteOnce"]}),
        ref(),
    )
    assert p.claim == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Ti"}},
        "storageClassName": "fss",
    }


def test_existing_claim_and_sub_path() -> None:
    p = params.build(spec(storage={"existingClaim": "models", "subPath": "llama"}), ref())
    assert (p.claim, p.claim_name, p.sub_path) == (None, "models", "llama")
    assert p.volumes[0] == {"name": "model-cache", "persistentVolumeClaim": {"claimName": "models"}}
    assert p.volume_mounts[0] == {
        "name": "model-cache",
        "mountPath": "/opt/nim/.cache",
        "subPath": "llama",
    }


def test_env() -> None:
    p = params.build(spec(authSecretKey="key"), ref())
    assert p.env == [
        {"name": "NGC_API_KEY", "valueFrom": {"secretKeyRef": {"name": "ngc-api", "key": "key"}}},
        {"name": "NIM_CACHE_PATH", "value": "/opt/nim/.cache"},
        {"name": "NIMOP_TERMINATION_LOG", "value": "/dev/termination-log"},
    ]


def test_proxy_env_and_ca_bundle() -> None:
    p = params.build(
        spec(
            proxy={
                "httpProxy": "http://p:3128",
                "httpsProxy": "http://p:3129",
                "noProxy": ".svc",
                "caBundle": {"configMapName": "corp-ca", "key": "bundle.pem"},
            }
        ),
        ref(),
    )
    env = {e["name"]: e.get("value") for e in p.env}
    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://p:3128"
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://p:3129"
    assert env["NO_PROXY"] == env["no_proxy"] == ".svc"
    assert env["NIMOP_PROXY_CA"] == apitypes.CA_BUNDLE_PATH
    assert {
        "name": "proxy-ca",
        "configMap": {"name": "corp-ca", "items": [{"key": "bundle.pem", "path": "ca.crt"}]},
    } in p.volumes
    assert {"name": "proxy-ca", "mountPath": "/etc/nimop/proxy-ca", "readOnly": True} in (
        p.volume_mounts
    )


def test_only_the_proxies_given_are_set() -> None:
    p = params.build(spec(proxy={"httpsProxy": "http://p:3128"}), ref())
    assert [e["name"] for e in p.env if "proxy" in e["name"].lower()] == [
        "HTTPS_PROXY",
        "https_proxy",
    ]
    assert "NIMOP_PROXY_CA" not in {e["name"] for e in p.env}


def test_resources_over_defaults() -> None:
    assert params.build(spec(), ref()).resources == {"requests": {"cpu": 1, "memory": "2Gi"}}
    limited = params.build(spec(resources={"limits": {"memory": "1Gi"}}), ref()).resources
    assert limited == {"requests": {"cpu": 1}, "limits": {"memory": "1Gi"}}


def test_default_tolerations() -> None:
    assert params.build(spec(), ref()).tolerations == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert params.build(spec(tolerations=[]), ref()).tolerations == []


def test_labels_select_the_job_and_its_pods() -> None:
    p = params.build(spec(), ref())
    assert p.labels[names.LABEL_MANAGED_BY] == "nimop"
    assert p.labels[names.LABEL_NIMCACHE] == NAME
    assert p.job_labels == {**p.labels, params.LABEL_JOB_HASH: p.job_hash}
    assert p.job_annotations == {params.ANNOTATION_GENERATION: "1"}
