"""NIM's cache utilities run as a container's main process: output lines, files, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nimsim import SimConfig, utilities
from nimsim.cache import read_manifest
from nimsim.catalog import profiles_for

LLAMA = "meta/llama-3.1-8b-instruct"
H100_FP8 = "2959f7f0dfeb14631352967402c282e904ff33e1d1fa015f603d9890cf92ca0f"
VLLM_TP1 = "3bb4e8fe78e5037b05dd618cebb1053347325ad6a1e709e0eb18bb8558362ac5"


def config(cache: Path, **env: str) -> SimConfig:
    base = {
        "NIMSIM_PATH_MAP": json.dumps({"/opt/nim/.cache": str(cache)}),
        "NGC_API_KEY": "nvapi-test",
        "NIMSIM_DOWNLOAD_DELAY": "0",
    }
    return SimConfig.from_env({**base, **env})


def blobs(cache: Path) -> list[Path]:
    return sorted(cache.glob("ngc/hub/*/blobs/*"))


async def run(argv: list[str], sim_config: SimConfig) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = await utilities.run(argv, sim_config, lines.append)
    return code, lines


def test_entrypoints_are_nims_names() -> None:
    assert {
        "download-to-cache",
        "nim_download_to_cache",
        "list-model-profiles",
        "nim_list_model_profiles",
        "create-model-store",
        "nim_create_model_store",
    } == utilities.ENTRYPOINTS


@pytest.mark.parametrize("command", ["download-to-cache", "nim_download_to_cache"])
async def test_download_to_cache_fetches_the_optimal_profile(tmp_path: Path, command: str) -> None:
    code, lines = await run([command], config(tmp_path))
    assert code == 0
    assert list(read_manifest(tmp_path)["profiles"]) == [H100_FP8]
    assert lines[-1].startswith("Cached 1 profile(s) in /opt/nim/.cache: ")
    assert "tensorrt_llm-h100-fp8-tp1-throughput" in lines[-1]


@pytest.mark.parametrize(
    "argv",
    [
        ["download-to-cache", "--profiles", VLLM_TP1, "vllm-fp16-tp2"],
        ["download-to-cache", "-p", VLLM_TP1, "-p", "vllm-fp16-tp2"],
        ["download-to-cache", "--profile", VLLM_TP1, "vllm-fp16-tp2"],  # argparse prefix, as NIM
    ],
)
async def test_download_named_profiles(tmp_path: Path, argv: list[str]) -> None:
    code, lines = await run(argv, config(tmp_path))
    assert code == 0, lines
    names = {e["name"] for e in read_manifest(tmp_path)["profiles"].values()}
    assert names >= {"vllm-fp16-tp2"}
    if argv.count("-p") != 2:
        assert names == {"vllm-fp16-tp1", "vllm-fp16-tp2"}


async def test_download_all_and_lora(tmp_path: Path) -> None:
    code, _ = await run(["download-to-cache", "--all"], config(tmp_path / "all"))
    assert code == 0
    assert len(read_manifest(tmp_path / "all")["profiles"]) == len(profiles_for(LLAMA))
    code, _ = await run(["download-to-cache", "--lora"], config(tmp_path / "lora"))
    assert code == 0
    [entry] = read_manifest(tmp_path / "lora")["profiles"].values()
    assert entry["name"] == "tensorrt_llm-h100-bf16-tp1-throughput-lora"


async def test_a_second_download_writes_nothing(tmp_path: Path) -> None:
    await run(["download-to-cache"], config(tmp_path))
    code, lines = await run(["download-to-cache"], config(tmp_path, NGC_API_KEY=""))
    assert code == 0
    assert any("is already in the cache; skipping" in line for line in lines)
    assert lines[-1].endswith("(0 written by this run)")


async def test_success_summary_goes_to_the_termination_log_when_mapped(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    path_map = {"/opt/nim/.cache": str(tmp_path / "cache"), "/dev/termination-log": str(log)}
    sim_config = config(tmp_path, NIMSIM_PATH_MAP=json.dumps(path_map))
    code, _ = await run(["download-to-cache", "-p", "vllm-fp16-tp1"], sim_config)
    assert code == 0
    summary = json.loads(log.read_text())
    assert summary["cachePath"] == "/opt/nim/.cache"
    assert summary["profiles"] == [{"id": VLLM_TP1, "name": "vllm-fp16-tp1"}]
    assert summary["bytes"] == summary["bytesWritten"] > 0


async def test_model_cache_path_flag(tmp_path: Path) -> None:
    path_map = {"/mnt/models": str(tmp_path)}
    sim_config = config(tmp_path, NIMSIM_PATH_MAP=json.dumps(path_map))
    code, _ = await run(["download-to-cache", "--model-cache-path", "/mnt/models"], sim_config)
    assert code == 0
    assert H100_FP8 in read_manifest(tmp_path)["profiles"]


@pytest.mark.parametrize(
    ("env", "last_line"),
    [
        (
            {"NGC_API_KEY": ""},
            "Error: The model is not present in NIM_CACHE_PATH and NGC_API_KEY is not set",
        ),
        ({"NGC_API_KEY": "nvapi-INVALID"}, "Error: Authentication failed (HTTP 401 Unauthorized)"),
        ({"NIMSIM_DOWNLOAD_FAULT": "auth-fail"}, "Error: Authentication failed"),
        ({"NIMSIM_DOWNLOAD_FAULT": "network-fail"}, "Error: Network failure downloading"),
        ({"NIMSIM_DOWNLOAD_FAULT": "disk-full"}, "Error: Disk full writing the model cache"),
        ({"NIMSIM_IMAGE": f"nvcr.io/nim/{LLAMA}:1.3.3-network-fail"}, "Error: Network failure"),
    ],
)
async def test_download_failures_exit_1_with_the_error_last(
    tmp_path: Path, env: dict[str, str], last_line: str
) -> None:
    code, lines = await run(["download-to-cache"], config(tmp_path, **env))
    assert code == 1
    assert lines[-1].startswith(last_line)
    assert read_manifest(tmp_path)["profiles"] == {}


async def test_disk_full_stops_partway(tmp_path: Path) -> None:
    code, lines = await run(
        ["download-to-cache"], config(tmp_path, NIMSIM_DOWNLOAD_FAULT="disk-full")
    )
    assert code == 1
    assert "[Errno 28] No space left on device" in lines[-2]
    assert blobs(tmp_path)  # some files made it before the disk filled


async def test_slow_download_reports_progress_and_succeeds(tmp_path: Path) -> None:
    sim_config = config(
        tmp_path, NIMSIM_DOWNLOAD_FAULT="slow-download", NIMSIM_SLOW_DOWNLOAD_SECONDS="0.2"
    )
    code, lines = await run(["download-to-cache"], sim_config)
    assert code == 0
    assert sum("bytes so far" in line for line in lines) >= 5


async def test_an_unwritable_cache_fails_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    code, lines = await run(["download-to-cache"], config(blocker / "cache"))
    assert code == 1
    assert lines[-1].startswith("Error: Cannot write the model cache: Not a directory")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["download-to-cache", "--lora", "--all"], "--lora cannot be combined"),
        (["download-to-cache", "--all", "-p", VLLM_TP1], "--all cannot be combined"),
        (["download-to-cache", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
async def test_bad_flags_exit_2_with_usage(tmp_path: Path, argv: list[str], message: str) -> None:
    code, lines = await run(argv, config(tmp_path))
    assert code == 2
    assert any(message in line for line in lines)
    assert lines[0].startswith(f"usage: {argv[0]}")


async def test_unknown_profile_exits_1(tmp_path: Path) -> None:
    code, lines = await run(["download-to-cache", "-p", "nope"], config(tmp_path))
    assert code == 1
    assert lines[-1].startswith("Error: Profile 'nope' is not in the model manifest")


async def test_help_exits_0(tmp_path: Path) -> None:
    code, lines = await run(["download-to-cache", "-h"], config(tmp_path))
    assert code == 0
    assert any("--profiles" in line for line in lines)


async def test_unknown_command_exits_2(tmp_path: Path) -> None:
    code, lines = await run(["download-everything"], config(tmp_path))
    assert code == 2
    assert "not a NIM utility" in lines[-1]


async def test_list_model_profiles(tmp_path: Path) -> None:
    code, lines = await run(["list-model-profiles"], config(tmp_path, NVIDIA_VISIBLE_DEVICES="0,1"))
    assert code == 0
    text = "\n".join(lines)
    assert lines[:2] == ["SYSTEM INFO", "- Free GPUs:"]
    assert text.count("NVIDIA H100 80GB HBM3") == 2
    compatible, incompatible = text.split("- Incompatible with system:")
    assert "MODEL PROFILES\n- Compatible with system and runnable:" in compatible
    assert f"  - {H100_FP8} (tensorrt_llm-h100-fp8-tp1-throughput)" in compatible
    assert "  - With LoRA support:\n    - " in compatible
    assert "tensorrt_llm-l40s-bf16-tp2-latency" in incompatible
    assert "vllm-fp16-tp8 " not in compatible
    assert "(vllm-fp16-tp8)" in incompatible


async def test_create_model_store(tmp_path: Path) -> None:
    path_map = {"/opt/nim/.cache": str(tmp_path / "cache"), "/store": str(tmp_path / "store")}
    sim_config = config(tmp_path, NIMSIM_PATH_MAP=json.dumps(path_map))
    argv = ["create-model-store", "-p", "vllm-fp16-tp1", "-m", "/store/llama"]
    code, lines = await run(argv, sim_config)
    assert code == 0, lines
    files = sorted(p.name for p in (tmp_path / "store" / "llama").iterdir())
    assert "config.json" in files
    assert "model-00001-of-00004.safetensors" in files
    assert not (tmp_path / "store" / "llama" / "config.json").is_symlink()
    missing: Any = await run(["create-model-store", "-p", "vllm-fp16-tp1"], sim_config)
    assert missing[0] == 2


async def test_a_read_only_cache_cannot_be_downloaded_into(tmp_path: Path) -> None:
    sim_config = config(tmp_path, NIMSIM_READ_ONLY_PATHS='["/opt/nim/.cache"]')
    code, lines = await run(["download-to-cache"], sim_config)
    assert code == 1
    assert lines[-1] == (
        "Error: Cannot write the model cache: Read-only file system (/opt/nim/.cache)"
    )
    # Reading a cache that is already there needs no writes.
    assert (await run(["download-to-cache"], config(tmp_path)))[0] == 0
    assert (await run(["download-to-cache"], sim_config))[0] == 0
