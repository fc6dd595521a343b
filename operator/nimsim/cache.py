"""The model cache under ``NIM_CACHE_PATH``: what a download writes and how a start finds it.

A real NIM downloads a profile's files with the NGC SDK into a Hugging Face
style hub cache (observed after ``download-to-cache`` of llama-3.1-8b-instruct
1.1.2, github.com/jovanjuzy/nim-training ``L40S/tree-download-to-cache.md``)::

    ngc/hub/models--nim--meta--llama-3_1-8b-instruct/
        blobs/<hash>                                   file contents
        refs/<version>                                 one per downloaded version
        snapshots/<version>/config.json -> ../../blobs/<hash>
    ngc/hub/tmp/

where ``<version>`` is the NGC model version of the profile's engine
(``0.11.1+ba20956e-l40sx1-bf16-throughput.1.1.0.17088220``) or, for vLLM
profiles, of the shared Hugging Face weights (``hf-8c22764-b``). The simulator
writes the same layout with small placeholder files (a few KiB, where the real
ones are gigabytes), plus ``nimsim-manifest.json`` at the cache root recording
each cached profile, its files and their bytes. A profile counts as present
when the manifest lists it and every one of its files exists, so deleting a
file from the cache forces a new download, as a real NIM's checksum check would.

Several pods may share one cache volume, so the manifest is updated under an
exclusive ``flock`` and replaced atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nimsim.catalog import Profile

MANIFEST = "nimsim-manifest.json"
_LOCK = ".nimsim-manifest.lock"
_HUB = Path("ngc") / "hub"

_ENGINE_FILES = ("checksums.blake3", "config.json", "LICENSE.txt", "metadata.json", "NOTICE.txt")
_WEIGHT_FILES = (
    "checksums.blake3",
    "config.json",
    "generation_config.json",
    "LICENSE.txt",
    "model-00001-of-00004.safetensors",
    "model-00002-of-00004.safetensors",
    "model-00003-of-00004.safetensors",
    "model-00004-of-00004.safetensors",
    "model.safetensors.index.json",
    "NOTICE.txt",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tool_use_config.json",
)
_PLACEHOLDER_BYTES = {".engine": 4096, ".safetensors": 4096}
_DEFAULT_PLACEHOLDER_BYTES = 256


@dataclass(frozen=True)
class CacheFile:
    """One file of a profile: its path in the snapshot and the placeholder's size."""

    name: str
    size: int


@dataclass(frozen=True)
class Workspace:
    """Where one profile of one model lives in the cache."""

    repo: str
    version: str
    files: tuple[CacheFile, ...]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def repo_dir_name(model: str) -> str:
    """``meta/llama-3.1-8b-instruct`` -> ``models--nim--meta--llama-3_1-8b-instruct``.

    NGC model names replace the dots of the image name with underscores.
    """
    return "models--nim--" + "--".join(model.replace(".", "_").split("/"))


def workspace(model: str, profile: Profile) -> Workspace:
    """The files and version a profile's download consists of."""
    digest = hashlib.sha256(f"{model}\0{profile.id}".encode()).hexdigest()
    if profile.engine == "vllm":
        # Every vLLM profile of a model serves the same Hugging Face weights.
        weights = hashlib.sha256(model.encode()).hexdigest()
        version = f"hf-{weights[:7]}-b"
        names: tuple[str, ...] = _WEIGHT_FILES
    else:
        gpu = (profile.gpu or "any").lower()
        precision = profile.tags.get("precision", "bf16")
        kind = profile.tags.get("profile", "throughput")
        version = f"0.11.1+{digest[:8]}-{gpu}x{profile.gpu_count}-{precision}-{kind}"
        if profile.lora:
            version += "-lora"
        ranks = tuple(f"rank{rank}.engine" for rank in range(profile.gpu_count))
        names = (*_ENGINE_FILES, *ranks)
    files = tuple(CacheFile(name, _placeholder_size(name)) for name in names)
    return Workspace(repo=repo_dir_name(model), version=version, files=files)


def _placeholder_size(name: str) -> int:
    return _PLACEHOLDER_BYTES.get(Path(name).suffix, _DEFAULT_PLACEHOLDER_BYTES)


def snapshot_dir(root: Path, space: Workspace) -> Path:
    return root / _HUB / space.repo / "snapshots" / space.version


def read_manifest(root: Path) -> dict[str, Any]:
    """The simulator's record of cached profiles (empty when there is none or it is unreadable)."""
    try:
        data: object = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return {"profiles": {}}
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        return {"profiles": {}}
    return data


def is_cached(root: Path, model: str, profile: Profile) -> bool:
    """True when a start with this cache needs no download for ``profile``."""
    entry = read_manifest(root)["profiles"].get(profile.id)
    if not isinstance(entry, dict) or entry.get("model") != model:
        return False
    snapshot = snapshot_dir(root, workspace(model, profile))
    return all((snapshot / f.name).exists() for f in workspace(model, profile).files)


def cached_profiles(root: Path) -> dict[str, dict[str, Any]]:
    """Profile id -> manifest entry for everything the manifest lists."""
    profiles: dict[str, dict[str, Any]] = read_manifest(root)["profiles"]
    return profiles


def write_file(root: Path, space: Workspace, file: CacheFile) -> int:
    """Write one placeholder the way the hub cache stores it; returns bytes written.

    A blob already present (weights shared with another profile) is only linked.

    The content goes to ``blobs/`` and the snapshot gets a relative symlink to it,
    as in the real cache. Raises OSError (ENOSPC, EROFS, EACCES, ...) as the
    filesystem reports it.
    """
    repo = root / _HUB / space.repo
    content = _placeholder(space, file)
    blob_name = hashlib.md5(content, usedforsecurity=False).hexdigest()
    blob = repo / "blobs" / blob_name
    blob.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    if not blob.exists():
        partial = blob.with_name(blob_name + ".incomplete")
        partial.write_bytes(content)
        partial.replace(blob)
        written = len(content)
    link = repo / "snapshots" / space.version / file.name
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path("..") / ".." / "blobs" / blob_name)
    return written


def finish_profile(root: Path, model: str, profile: Profile, space: Workspace) -> None:
    """Record a completed download: the ref file, the tmp dir and the manifest entry."""
    repo = root / _HUB / space.repo
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / space.version).write_text(space.version)
    (root / _HUB / "tmp").mkdir(parents=True, exist_ok=True)
    with _locked(root):
        manifest = read_manifest(root)
        manifest["profiles"][profile.id] = {
            "model": model,
            "name": profile.name,
            "tags": dict(profile.tags),
            "repo": space.repo,
            "version": space.version,
            "files": [f.name for f in space.files],
            "bytes": space.bytes,
        }
        temporary = root / f".{MANIFEST}.{os.getpid()}.tmp"
        temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        temporary.replace(root / MANIFEST)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    with (root / _LOCK).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _placeholder(space: Workspace, file: CacheFile) -> bytes:
    # Keyed by the model version, not the profile: profiles sharing weights share blobs.
    header = f"nimsim placeholder for {file.name} of {space.repo}:{space.version}\n".encode()
    if file.name.endswith(".json"):
        header = json.dumps({"nimsim_placeholder": header.decode().strip()}).encode() + b"\n"
    return header.ljust(max(file.size, len(header)), b"\n")[: max(file.size, len(header))]
