"""LoRA adapters found under ``NIM_PEFT_SOURCE``, served beside the base model.

NIM for LLMs loads adapters from a local directory named by ``NIM_PEFT_SOURCE``,
one sub-directory per adapter whose name is the adapter's model id; "only valid,
readable adapter directories are loaded": Hugging Face format
(``adapter_config.json`` with ``adapter_model.safetensors`` or ``.bin``) or NeMo
format (a ``.nemo`` file)
(https://docs.nvidia.com/nim/large-language-models/latest/peft.html,
``advanced-use-cases/finetune-lora.html``). Each is listed in ``/v1/models`` with
``parent`` set to the base model (vLLM's
``OpenAIServingModels.show_available_models``: ``root`` is the adapter's path,
``parent`` the base model, no ``max_model_len``). A request may name an adapter
as its ``model``.

With dynamic LoRA a NIM watches the directory and ``/v1/models`` follows it;
the simulator rereads it on every request, which is cheap for a handful of
directories.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nimsim.config import SimConfig


@dataclass(frozen=True)
class Adapter:
    name: str
    path: str
    """The adapter's directory as the container sees it."""


def adapters(config: SimConfig) -> tuple[Adapter, ...]:
    """The adapters currently present, sorted by name (none when PEFT is not configured)."""
    if not config.peft_source:
        return ()
    root = config.host_path(config.peft_source)
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return ()
    source = config.peft_source.rstrip("/")
    return tuple(
        Adapter(entry.name, f"{source}/{entry.name}")
        for entry in entries
        if entry.is_dir() and not entry.name.startswith(".") and _valid(entry)
    )


def _valid(directory: Path) -> bool:
    """An adapter in Hugging Face format (adapter_config.json) or NeMo format (.nemo)."""
    try:
        names = [p.name for p in directory.iterdir()]
    except OSError:
        return False
    return "adapter_config.json" in names or any(n.endswith(".nemo") for n in names)
