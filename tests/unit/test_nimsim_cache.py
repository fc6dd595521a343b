"""The cache layout under NIM_CACHE_PATH, written to a real temporary directory."""

from __future__ import annotations

import json
from pathlib import Path

from nimsim import cache
from nimsim.catalog import find_profile, profiles_for

LLAMA = "meta/llama-3.1-8b-instruct"
PROFILES = profiles_for(LLAMA)
H100_TP2 = find_profile(PROFILES, "tensorrt_llm-h100-fp8-tp2-latency")
VLLM_TP1 = find_profile(PROFILES, "vllm-fp16-tp1")
VLLM_TP2 = find_profile(PROFILES, "vllm-fp16-tp2")


def fetch(root: Path, profile_name: str) -> cache.Workspace:
    profile = find_profile(PROFILES, profile_name)
    space = cache.workspace(LLAMA, profile)
    for file in space.files:
        cache.write_file(root, space, file)
    cache.finish_profile(root, LLAMA, profile, space)
    return space


def test_repo_directory_is_named_as_ngc_names_it() -> None:
    assert cache.repo_dir_name(LLAMA) == "models--nim--meta--llama-3_1-8b-instruct"


def test_engine_profiles_have_one_engine_per_rank() -> None:
    space = cache.workspace(LLAMA, H100_TP2)
    names = [f.name for f in space.files]
    assert {"config.json", "checksums.blake3", "metadata.json"} <= set(names)
    assert [n for n in names if n.endswith(".engine")] == ["rank0.engine", "rank1.engine"]
    assert space.version.startswith("0.11.1+")
    assert "-h100x2-fp8-latency" in space.version


def test_vllm_profiles_share_the_hugging_face_weights() -> None:
    one, two = cache.workspace(LLAMA, VLLM_TP1), cache.workspace(LLAMA, VLLM_TP2)
    assert one.version == two.version
    assert one.version.startswith("hf-")
    assert "model.safetensors.index.json" in [f.name for f in one.files]


def test_download_layout_is_blobs_refs_and_snapshot_links(tmp_path: Path) -> None:
    space = fetch(tmp_path, "tensorrt_llm-h100-fp8-tp2-latency")
    repo = tmp_path / "ngc" / "hub" / space.repo
    snapshot = repo / "snapshots" / space.version
    for file in space.files:
        link = snapshot / file.name
        assert link.is_symlink()
        target = Path(str(link.readlink()))
        assert target.parts[:3] == ("..", "..", "blobs")
        assert link.resolve().parent == (repo / "blobs").resolve()
        assert link.stat().st_size == file.size
    assert (repo / "refs" / space.version).read_text() == space.version
    assert (tmp_path / "ngc" / "hub" / "tmp").is_dir()
    json.loads((snapshot / "config.json").read_text())


def test_manifest_records_each_profile(tmp_path: Path) -> None:
    first = fetch(tmp_path, "tensorrt_llm-h100-fp8-tp2-latency")
    fetch(tmp_path, "vllm-fp16-tp1")
    entries = cache.cached_profiles(tmp_path)
    assert set(entries) == {H100_TP2.id, VLLM_TP1.id}
    entry = entries[H100_TP2.id]
    assert (entry["name"], entry["model"], entry["version"]) == (
        "tensorrt_llm-h100-fp8-tp2-latency",
        LLAMA,
        first.version,
    )
    assert entry["bytes"] == first.bytes
    assert entry["tags"]["precision"] == "fp8"
    assert cache.is_cached(tmp_path, LLAMA, H100_TP2)
    assert cache.is_cached(tmp_path, LLAMA, VLLM_TP1)
    assert not cache.is_cached(tmp_path, LLAMA, VLLM_TP2)
    assert not cache.is_cached(tmp_path, "acme/other", H100_TP2)


def test_a_deleted_file_means_not_cached(tmp_path: Path) -> None:
    space = fetch(tmp_path, "vllm-fp16-tp1")
    snapshot = cache.snapshot_dir(tmp_path, space)
    (snapshot / "model-00003-of-00004.safetensors").unlink()
    assert not cache.is_cached(tmp_path, LLAMA, VLLM_TP1)


def test_an_unreadable_manifest_counts_as_empty(tmp_path: Path) -> None:
    (tmp_path / cache.MANIFEST).write_text("{not json")
    assert cache.read_manifest(tmp_path) == {"profiles": {}}
    assert not cache.is_cached(tmp_path, LLAMA, VLLM_TP1)
    fetch(tmp_path, "vllm-fp16-tp1")
    assert cache.is_cached(tmp_path, LLAMA, VLLM_TP1)
