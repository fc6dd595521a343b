"""What the simulated NIM image ships: each model's context length and its model profiles.

A real NIM image carries a model manifest (``/opt/nim/etc/default/model_manifest.yaml``)
listing profiles: one engine build or runtime configuration each, identified by a
64-hex hash and described by tags (``llm_engine``, ``precision``, ``tp``, ``gpu``,
``profile``, ``feat_lora``). At start-up NIM picks the best profile compatible with
the GPUs it sees, unless ``NIM_MODEL_PROFILE`` names one by id or by name
(https://docs.nvidia.com/nim/large-language-models/latest/profiles.html).

Llama 3.1 8B Instruct's profiles below are the ids and names printed by
``list-model-profiles`` in ``nvcr.io/nim/meta/llama-3.1-8b-instruct:1.1.2``
(recorded in github.com/jovanjuzy/nim-training,
``L40S/docker-run-llama-3.1-8b-instruct-download-to-cache.sh``). Models the
catalog does not know get a generic set of profiles whose ids are derived from
the model and profile name, so they are stable across runs.

The simulator has no GPUs. It assumes what a pod on one of the lab's nodes
would see: ``NIMSIM_GPU_PRODUCT`` (default ``h100``) GPUs, as many as
``NVIDIA_VISIBLE_DEVICES`` lists (the device plugin sets it) or
``NIMSIM_GPU_COUNT`` says, default 1 (see :mod:`nimsim.config`). See
:func:`select_profile` for the rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nimsim.config import SimConfig

# Meta's model cards: Llama 3.1 and 3.3 have a 128K (131072-token) context, Llama 3 8K.
_CONTEXT_LENGTHS: dict[str, int] = {
    "meta/llama-3.1-8b-instruct": 131072,
    "meta/llama-3.1-70b-instruct": 131072,
    "meta/llama-3.1-405b-instruct": 131072,
    "meta/llama-3.3-70b-instruct": 131072,
    "meta/llama3-8b-instruct": 8192,
    "meta/llama3-70b-instruct": 8192,
    "mistralai/mistral-7b-instruct-v0.3": 32768,
}
DEFAULT_CONTEXT_LENGTH = 8192

# Real list-model-profiles output of nvcr.io/nim/meta/llama-3.1-8b-instruct:1.1.2 (see above).
_LLAMA_3_1_8B = """
0494aafce0df9eeaea49bbca6b25fc3013d0e8a752ebcf191a2ddeaab19481ee tensorrt_llm-l40s-bf16-tp2-latency
a534b0f5e885d747e819fa8b1ad7dc1396f935425a6e0539cb29b0e0ecf1e669 tensorrt_llm-l40s-bf16-tp2-throughput
3807be802a8ab1d999bf280c96dcd8cf77ac44c0a4d72edb9083f0abb89b6a19 tensorrt_llm-l40s-bf16-tp1-throughput
6a3ba475d3215ca28f1a8c8886ab4a56b5626d1c98adbfe751025e8ff3d9886d vllm-fp16-tp2
3bb4e8fe78e5037b05dd618cebb1053347325ad6a1e709e0eb18bb8558362ac5 vllm-fp16-tp1
6b89dc22ba60a07df3051451b7dc4ef418d205e52e19cb0845366dc18dd61bd6 tensorrt_llm-l40s-bf16-tp2-throughput-lora
a95e5c7221dae587b4fc32448df265320ce79064a970297649d97a84eb9dc3ba vllm-fp16-tp2-lora
dfd9bee71abb7582246f7fb8c2aedd9119909b9639e1b4b0260ef6865545ede7 vllm-fp16-tp1-lora
0bc4cc784e55d0a88277f5d1aeab9f6ecb756b9049dd07c1835035211fcfe77e tensorrt_llm-h100-fp8-tp2-latency
2959f7f0dfeb14631352967402c282e904ff33e1d1fa015f603d9890cf92ca0f tensorrt_llm-h100-fp8-tp1-throughput
4829bb6204dd994f8448ae7fb2cec9d4c6933c382f84463176a5b5cd76cb73c8 tensorrt_llm-a100-fp16-tp2-latency
e45b4b991bbc51d0df3ce53e87060fc3a7f76555406ed534a8479c6faa706987 tensorrt_llm-a10g-bf16-tp4-latency
7f98797c334a8b7205d4cbf986558a2b8a181570b46abed9401f7da6d236955e tensorrt_llm-h100-bf16-tp2-latency
ba515cc44a34ae4db8fe375bd7e5ad30e9a760bd032230827d8a54835a69c409 tensorrt_llm-a10g-bf16-tp2-throughput
7ea3369b85d7aee24e0739df829da8832b6873803d5f5aca490edad7360830c8 tensorrt_llm-a100-bf16-tp1-throughput
9cff0915527166b2e93c08907afd4f74e168562992034a51db00df802e86518c tensorrt_llm-h100-bf16-tp1-throughput
ec13a06451be8a6e1d8aa4e7a6010f970e0d150a44ce6e6012149c9e60ae3529 vllm-fp16-tp8
407c6c5d1e29be9929f41b9a2e3193359b8ebfa512353de88cefbf1e0f0b194e vllm-fp16-tp4
fcfdd389299632ae51e5560b3368d18c4774441ef620aa1abf80d7077b2ced2b tensorrt_llm-a10g-bf16-tp4-throughput-lora
a506c5bed39ba002797d472eb619ef79b1ffdf8fb96bb54e2ff24d5fc421e196 tensorrt_llm-a100-bf16-tp1-throughput-lora
40543df47628989c7ef5b16b33bd1f55165dddeb608bf3ccb56cdbb496ba31b0 tensorrt_llm-h100-bf16-tp1-throughput-lora
d3711d1ebdbe7798834c684c01c10b1091ebef28d1e609b971ecbe6b8c02e05a vllm-fp16-tp8-lora
678e6dbe53dd6fe7dc508d22eb0672743ba0b7e735007cfd0b0d2a9e05911fb9 vllm-fp16-tp4-lora
"""  # noqa: E501

# Profiles for a model the catalog does not know: a generic vLLM set and H100/A100 engines.
_GENERIC_NAMES = (
    "tensorrt_llm-h100-fp8-tp1-throughput",
    "tensorrt_llm-h100-fp8-tp2-latency",
    "tensorrt_llm-h100-bf16-tp1-throughput",
    "tensorrt_llm-a100-bf16-tp1-throughput",
    "vllm-bf16-tp1",
    "vllm-bf16-tp2",
    "vllm-bf16-tp1-lora",
)

# Lower is preferred (NIM: "lower precision profiles are preferred when available").
_PRECISION_RANK = {"fp4": 0, "nvfp4": 0, "int4": 1, "fp8": 2, "int8": 3, "bf16": 4, "fp16": 4}


@dataclass(frozen=True)
class Profile:
    """One model profile, as listed in a NIM model manifest."""

    id: str
    name: str
    tags: Mapping[str, str]

    @property
    def engine(self) -> str:
        return self.tags["llm_engine"]

    @property
    def gpu(self) -> str | None:
        """The GPU an optimized engine was built for; None for a generic profile."""
        return self.tags.get("gpu")

    @property
    def gpu_count(self) -> int:
        return int(self.tags.get("tp", "1")) * int(self.tags.get("pp", "1"))

    @property
    def lora(self) -> bool:
        return self.tags.get("feat_lora") == "true"

    def describe(self) -> str:
        """The tag dict as NIM's utilities print it: ``{'feat_lora': 'false', ...}``."""
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in sorted(self.tags.items())) + "}"


def profile_from_name(profile_id: str, name: str) -> Profile:
    """Derive a profile's manifest tags from its NIM name.

    ``tensorrt_llm-h100-fp8-tp1-throughput`` -> ``llm_engine: tensorrt_llm, gpu: H100,
    precision: fp8, tp: 1, pp: 1, profile: throughput, feat_lora: false``.
    """
    parts = name.split("-")
    engine = parts[0]
    lora = parts[-1] == "lora"
    if lora:
        parts = parts[:-1]
    tags = {"llm_engine": engine, "feat_lora": "true" if lora else "false", "pp": "1"}
    for part in parts[1:]:
        if part.startswith("tp") and part[2:].isdigit():
            tags["tp"] = part[2:]
        elif part in _PRECISION_RANK:
            tags["precision"] = part
        elif part in ("throughput", "latency"):
            tags["profile"] = part
        else:
            tags["gpu"] = part.upper()
    tags.setdefault("tp", "1")
    return Profile(profile_id, name, tags)


def profiles_for(model: str) -> tuple[Profile, ...]:
    """The profiles the image for ``model`` ships, in manifest order."""
    if model == "meta/llama-3.1-8b-instruct":
        rows = (line.split() for line in _LLAMA_3_1_8B.strip().splitlines())
        return tuple(profile_from_name(pid, name) for pid, name in rows)
    return tuple(
        profile_from_name(hashlib.sha256(f"{model}\0{name}".encode()).hexdigest(), name)
        for name in _GENERIC_NAMES
    )


def context_length(model: str) -> int:
    """The model's own maximum context (what a NIM serves without NIM_MAX_MODEL_LEN)."""
    return _CONTEXT_LENGTHS.get(model, DEFAULT_CONTEXT_LENGTH)


@dataclass(frozen=True)
class System:
    """The GPUs the simulated container sees."""

    gpu: str = "H100"
    count: int = 1

    def compatible(self, profile: Profile) -> bool:
        gpu_ok = profile.gpu is None or profile.gpu == self.gpu.upper()
        return gpu_ok and profile.gpu_count <= self.count


class ProfileError(ValueError):
    """NIM_MODEL_PROFILE names no profile, or nothing fits the system."""


def find_profile(profiles: Sequence[Profile], wanted: str) -> Profile:
    """A profile by id or by name, as ``NIM_MODEL_PROFILE`` accepts either."""
    for profile in profiles:
        if wanted in (profile.id, profile.name):
            return profile
    known = ", ".join(p.name for p in profiles)
    raise ProfileError(f"Profile '{wanted}' is not in the model manifest (profiles: {known})")


def select_profile(profiles: Sequence[Profile], system: System, wanted: str | None) -> Profile:
    """The profile NIM would run: the named one, else the best compatible one.

    NIM's automatic selection (profiles.html, "Automatic Profile Selection"):
    drop profiles the GPUs cannot run, prefer TensorRT-LLM over vLLM, then lower
    precision, then latency over throughput, then higher tensor parallelism. LoRA
    variants are only chosen by name, as NIM picks them only when PEFT is enabled.
    """
    if wanted:
        return find_profile(profiles, wanted)
    candidates = [p for p in profiles if system.compatible(p) and not p.lora]
    if not candidates:
        raise ProfileError(
            f"Could not find a profile that is currently runnable with the detected hardware "
            f"({system.count} x {system.gpu}). Please check the system information below and "
            "the list of available profiles with list-model-profiles."
        )

    def rank(profile: Profile) -> tuple[int, int, int, int]:
        return (
            0 if profile.engine == "tensorrt_llm" else 1,
            _PRECISION_RANK.get(profile.tags.get("precision", ""), 9),
            0 if profile.tags.get("profile") == "latency" else 1,
            -profile.gpu_count,
        )

    return min(candidates, key=rank)


def system_of(config: SimConfig) -> System:
    return System(config.gpu_product, config.gpu_count)


def selected_profile(config: SimConfig) -> Profile:
    """The profile a NIM started with ``config`` runs (ProfileError if none)."""
    return select_profile(profiles_for(config.model), system_of(config), config.model_profile)
