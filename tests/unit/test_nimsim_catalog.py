"""Model profiles and NIM's profile selection (pure functions)."""

from __future__ import annotations

import re

import pytest

from nimsim import SimConfig
from nimsim.catalog import (
    ProfileError,
    System,
    context_length,
    find_profile,
    profile_from_name,
    profiles_for,
    select_profile,
    selected_profile,
)

LLAMA = "meta/llama-3.1-8b-instruct"


def test_llama_profiles_are_the_real_manifest() -> None:
    profiles = profiles_for(LLAMA)
    assert len(profiles) == 23
    assert all(re.fullmatch(r"[0-9a-f]{64}", p.id) for p in profiles)
    assert len({p.id for p in profiles}) == len({p.name for p in profiles}) == 23
    h100 = find_profile(profiles, "tensorrt_llm-h100-fp8-tp1-throughput")
    assert h100.id == "2959f7f0dfeb14631352967402c282e904ff33e1d1fa015f603d9890cf92ca0f"


def test_tags_come_from_the_name() -> None:
    profile = profile_from_name("ab" * 32, "tensorrt_llm-h100-fp8-tp2-latency")
    assert dict(profile.tags) == {
        "llm_engine": "tensorrt_llm",
        "gpu": "H100",
        "precision": "fp8",
        "tp": "2",
        "pp": "1",
        "profile": "latency",
        "feat_lora": "false",
    }
    assert (profile.gpu, profile.gpu_count, profile.lora) == ("H100", 2, False)
    generic = profile_from_name("cd" * 32, "vllm-bf16-tp4-lora")
    assert dict(generic.tags) == {
        "llm_engine": "vllm",
        "precision": "bf16",
        "tp": "4",
        "pp": "1",
        "feat_lora": "true",
    }
    assert (generic.gpu, generic.lora) == (None, True)
    assert generic.describe() == (
        "{'feat_lora': 'true', 'llm_engine': 'vllm', 'pp': '1', 'precision': 'bf16', 'tp': '4'}"
    )


def test_unknown_models_get_stable_generic_profiles() -> None:
    first = profiles_for("acme/tiny")
    assert first == profiles_for("acme/tiny")
    assert {p.id for p in first}.isdisjoint({p.id for p in profiles_for("acme/other")})
    assert "vllm-bf16-tp1" in {p.name for p in first}


@pytest.mark.parametrize(
    ("system", "name"),
    [
        (System("H100", 1), "tensorrt_llm-h100-fp8-tp1-throughput"),
        # TensorRT-LLM first, then lower precision, then latency, then higher TP.
        (System("H100", 2), "tensorrt_llm-h100-fp8-tp2-latency"),
        (System("H100", 8), "tensorrt_llm-h100-fp8-tp2-latency"),
        (System("A100", 1), "tensorrt_llm-a100-bf16-tp1-throughput"),
        (System("A100", 2), "tensorrt_llm-a100-fp16-tp2-latency"),
        (System("L40S", 2), "tensorrt_llm-l40s-bf16-tp2-latency"),
        (System("A10G", 2), "tensorrt_llm-a10g-bf16-tp2-throughput"),
        # No optimized engine for the GPU: the generic vLLM profile that fits.
        (System("T4", 1), "vllm-fp16-tp1"),
        (System("T4", 8), "vllm-fp16-tp8"),
    ],
)
def test_automatic_selection(system: System, name: str) -> None:
    assert select_profile(profiles_for(LLAMA), system, None).name == name


def test_selection_never_picks_lora_on_its_own_but_a_name_can() -> None:
    profiles = profiles_for(LLAMA)
    assert not select_profile(profiles, System("H100", 8), None).lora
    chosen = select_profile(profiles, System("H100", 1), "vllm-fp16-tp1-lora")
    assert chosen.lora


def test_named_profile_by_id_or_name_ignores_the_hardware() -> None:
    profiles = profiles_for(LLAMA)
    wanted = "0494aafce0df9eeaea49bbca6b25fc3013d0e8a752ebcf191a2ddeaab19481ee"
    assert select_profile(profiles, System("H100", 1), wanted).name == (
        "tensorrt_llm-l40s-bf16-tp2-latency"
    )
    assert select_profile(profiles, System("H100", 1), "vllm-fp16-tp8").gpu_count == 8


def test_unknown_profile_names_what_exists() -> None:
    with pytest.raises(ProfileError, match="Profile 'nope' is not in the model manifest"):
        select_profile(profiles_for(LLAMA), System(), "nope")


def test_nothing_runnable_is_a_clear_error() -> None:
    profiles = [p for p in profiles_for(LLAMA) if p.gpu == "H100"]
    with pytest.raises(ProfileError, match=r"1 x A100"):
        select_profile(profiles, System("A100", 1), None)


def test_selected_profile_reads_the_config() -> None:
    config = SimConfig.from_env({"NIMSIM_GPU_PRODUCT": "l40s", "NIMSIM_GPU_COUNT": "1"})
    assert selected_profile(config).name == "tensorrt_llm-l40s-bf16-tp1-throughput"
    config = SimConfig.from_env({"NIM_MODEL_PROFILE": "vllm-fp16-tp2"})
    assert selected_profile(config).name == "vllm-fp16-tp2"


def test_context_lengths() -> None:
    assert context_length(LLAMA) == 131072
    assert context_length("meta/llama3-8b-instruct") == 8192
    assert context_length("acme/unknown") == 8192
    assert SimConfig(max_model_len=2048).context_len == 2048
