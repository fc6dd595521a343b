"""A simulated NIM process's life on real sockets and a real cache directory.

Cold start: downloading (connection refused) -> loading (live 200, ready 503) ->
ready; a second start on the same cache skips the download; failures end the
process with NIM's error text as its exit message.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from nimsim import SimConfig, Simulator
from nimsim.cache import MANIFEST, read_manifest

MODEL = "meta/llama-3.1-8b-instruct"
H100_FP8 = "2959f7f0dfeb14631352967402c282e904ff33e1d1fa015f603d9890cf92ca0f"
VLLM_TP1 = "3bb4e8fe78e5037b05dd618cebb1053347325ad6a1e709e0eb18bb8558362ac5"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cache_env(cache: Path, **extra: str) -> dict[str, str]:
    return {
        "NIMSIM_PATH_MAP": json.dumps({"/opt/nim/.cache": str(cache)}),
        "NIM_CACHE_PATH": "/opt/nim/.cache",
        "NGC_API_KEY": "nvapi-test",
        "NIM_SERVER_PORT": "0",
        "NIMSIM_DOWNLOAD_DELAY": "0.05",
        "NIMSIM_LOAD_DELAY": "0",
        **extra,
    }


@asynccontextmanager
async def started(env: dict[str, str], **kwargs: Any) -> AsyncIterator[tuple[Simulator, list[str]]]:
    lines: list[str] = []
    sim = Simulator(SimConfig.from_env(env), output=lines.append, **kwargs)
    await sim.start()
    try:
        yield sim, lines
    finally:
        await sim.stop()


def phase_of(sim: Simulator) -> str:
    """The phase now (a call, so the type checker does not carry an earlier check over)."""
    return sim.phase


async def until(condition: Any, seconds: float = 10.0) -> None:
    """Wait for a condition that the simulator reaches on its own (bounded, not timed)."""
    async with asyncio.timeout(seconds):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def contents(directory: Path, pattern: str = "*") -> list[Path]:
    return sorted(directory.glob(pattern))


async def test_cold_start_is_refused_then_503_then_200(tmp_path: Path) -> None:
    port = free_port()
    env = cache_env(
        tmp_path,
        NIM_SERVER_PORT=str(port),
        NIMSIM_DOWNLOAD_DELAY="0.6",
        NIMSIM_LOAD_DELAY="0.6",
    )
    seen: list[str] = []
    phases: list[str] = []
    async with (
        started(env) as (sim, lines),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2, trust_env=False) as http,
    ):
        assert sim.phase == "downloading"
        while not seen or seen[-1] != "200":
            phase = sim.phase
            try:
                ready = await http.get("/v1/health/ready")
            except httpx.ConnectError:
                observed = "refused"
            else:
                observed = str(ready.status_code)
                if observed == "503":
                    assert (await http.get("/v1/health/live")).status_code == 200
            if not seen or seen[-1] != observed:
                seen.append(observed)
            if not phases or phases[-1] != phase:
                phases.append(phase)
            await asyncio.sleep(0.02)
        assert seen == ["refused", "503", "200"]
        assert phases[0] == "downloading"
        assert phases[-1] in ("loading", "ready")
        assert phase_of(sim) == "ready"
        assert sim.url == f"http://127.0.0.1:{port}"
    text = "\n".join(lines)
    assert f"Selected profile: {H100_FP8} (tensorrt_llm-h100-fp8-tp1-throughput)" in text
    assert "Downloading profile" in text
    assert "Model workspace is now ready" in text
    assert "Uvicorn running on" in text
    assert not sim.exited.is_set()
    assert sim.exit_code is None


async def test_second_start_on_the_same_cache_skips_the_download(tmp_path: Path) -> None:
    env = cache_env(tmp_path, NIMSIM_DOWNLOAD_DELAY="0.2")
    async with started(env) as (first, _):
        await until(lambda: first.phase == "ready")
    manifest = read_manifest(tmp_path)
    assert list(manifest["profiles"]) == [H100_FP8]
    assert (tmp_path / MANIFEST).is_file()

    async with started({**env, "NGC_API_KEY": ""}) as (second, lines):
        # No download: it listens at once, even without an NGC key (air-gapped).
        assert second.phase in ("loading", "ready")
        assert second.listening.is_set()
        await until(lambda: second.phase == "ready")
    assert not any("Downloading profile" in line for line in lines)
    assert any("Model workspace is now ready" in line for line in lines)


async def test_a_missing_file_forces_a_new_download(tmp_path: Path) -> None:
    env = cache_env(tmp_path)
    async with started(env) as (sim, _):
        await until(lambda: sim.phase == "ready")
    [engine] = contents(tmp_path, "ngc/hub/*/snapshots/*/rank0.engine")
    engine.unlink()
    async with started(env) as (again, lines):
        assert phase_of(again) == "downloading"
        await until(lambda: again.phase == "ready")
    assert engine.exists()
    assert any("Downloading profile" in line for line in lines)


async def test_download_without_a_key_exits_with_nims_error(tmp_path: Path) -> None:
    async with started(cache_env(tmp_path, NGC_API_KEY="")) as (sim, lines):
        await asyncio.wait_for(sim.exited.wait(), 10)
        assert sim.phase == "exited"
        assert sim.exit_code == 1
        assert sim.exit_message is not None
        assert "NGC_API_KEY is not set" in sim.exit_message
        assert lines[-1] == sim.exit_message
        assert not sim.listening.is_set()
    assert not (tmp_path / MANIFEST).exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NGC_API_KEY": "nvapi-invalid-key"}, "Authentication failed (HTTP 401 Unauthorized)"),
        ({"NIMSIM_DOWNLOAD_FAULT": "auth-fail"}, "NGC_API_KEY was rejected"),
        ({"NIMSIM_DOWNLOAD_FAULT": "network-fail"}, "Network failure downloading the model"),
        ({"NIMSIM_DOWNLOAD_FAULT": "disk-full"}, "No space left on device"),
        ({"NIMSIM_IMAGE": f"nvcr.io/nim/{MODEL}:1.3.3-disk-full"}, "Disk full"),
    ],
)
async def test_download_faults_end_the_process(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    async with started(cache_env(tmp_path, **env)) as (sim, lines):
        await asyncio.wait_for(sim.exited.wait(), 10)
        assert sim.exit_code == 1
        assert sim.exit_message is not None
        assert message in sim.exit_message
        assert lines[-1] == sim.exit_message
        assert not sim.listening.is_set()
    assert H100_FP8 not in read_manifest(tmp_path)["profiles"]


async def test_slow_download_takes_longer_and_then_serves(tmp_path: Path) -> None:
    env = cache_env(tmp_path, NIMSIM_DOWNLOAD_FAULT="slow-download")
    env["NIMSIM_SLOW_DOWNLOAD_SECONDS"] = "0.3"
    async with started(env) as (sim, lines):
        await until(lambda: sim.phase == "ready")
    assert any("bytes so far" in line for line in lines)


async def test_nim_model_profile_selects_by_name_or_id(tmp_path: Path) -> None:
    async with started(cache_env(tmp_path, NIM_MODEL_PROFILE="vllm-fp16-tp1")) as (sim, lines):
        await until(lambda: sim.phase == "ready")
    assert sim.profile is not None
    assert sim.profile.id == VLLM_TP1
    assert any(f"Selected profile: {VLLM_TP1} (vllm-fp16-tp1)" in line for line in lines)
    async with started(cache_env(tmp_path, NIM_MODEL_PROFILE=VLLM_TP1)) as (again, lines):
        assert again.phase != "downloading"
    assert read_manifest(tmp_path)["profiles"][VLLM_TP1]["name"] == "vllm-fp16-tp1"


async def test_unknown_profile_ends_the_process(tmp_path: Path) -> None:
    async with started(cache_env(tmp_path, NIM_MODEL_PROFILE="vllm-int3-tp9")) as (sim, _):
        await asyncio.wait_for(sim.exited.wait(), 10)
        assert sim.exit_code == 1
        assert sim.exit_message is not None
        assert "Profile 'vllm-int3-tp9' is not in the model manifest" in sim.exit_message
        assert "tensorrt_llm-h100-fp8-tp1-throughput" in sim.exit_message


async def test_no_cache_volume_means_a_fresh_download_every_start(tmp_path: Path) -> None:
    # A path map without a cache volume: /opt/nim/.cache is the container's own layer.
    env = {
        "NIMSIM_PATH_MAP": json.dumps({"/data": str(tmp_path)}),
        "NGC_API_KEY": "nvapi-test",
        "NIM_SERVER_PORT": "0",
        "NIMSIM_DOWNLOAD_DELAY": "0",
        "NIMSIM_LOAD_DELAY": "0",
    }
    for _ in range(2):
        async with started(env) as (sim, lines):
            await until(lambda: sim.phase == "ready")
        assert any("Downloading profile" in line for line in lines)
    assert contents(tmp_path) == []


async def test_without_a_cache_path_the_model_is_present() -> None:
    async with started({"NIM_SERVER_PORT": "0", "NIMSIM_LOAD_DELAY": "0"}) as (sim, lines):
        assert sim.listening.is_set()
        await until(lambda: sim.phase == "ready")
    assert not any("Downloading" in line for line in lines)


async def test_binding_retries_then_exits(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {"NIM_SERVER_PORT": str(port), "NIMSIM_LOAD_DELAY": "0"}
        async with started(env, bind_seconds=0.3) as (sim, _):
            assert sim.phase == "loading"
            assert not sim.listening.is_set()
            await asyncio.wait_for(sim.exited.wait(), 10)
            assert sim.exit_code == 1
            assert sim.exit_message is not None
            assert "address already in use" in sim.exit_message
            assert f"('127.0.0.1', {port})" in sim.exit_message


async def test_binding_succeeds_once_the_address_is_free() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    async with started({"NIM_SERVER_PORT": str(port), "NIMSIM_LOAD_DELAY": "0"}) as (sim, _):
        assert not sim.listening.is_set()
        holder.close()
        await asyncio.wait_for(sim.listening.wait(), 10)
        assert sim.url == f"http://127.0.0.1:{port}"
        assert not sim.exited.is_set()


async def test_stop_during_download_is_not_an_exit(tmp_path: Path) -> None:
    async with started(cache_env(tmp_path, NIMSIM_DOWNLOAD_DELAY="30")) as (sim, _):
        assert sim.phase == "downloading"
        await sim.stop()
        await sim.stop()
        assert phase_of(sim) == "exited"
        assert not sim.exited.is_set()
        assert sim.exit_code is None
    assert H100_FP8 not in read_manifest(tmp_path)["profiles"]


async def test_crash_after_ends_the_process_on_its_own() -> None:
    env = {"NIM_SERVER_PORT": "0", "NIMSIM_LOAD_DELAY": "0", "NIMSIM_FAULT": "crash-after:0.2"}
    async with started(env) as (sim, lines):
        await asyncio.wait_for(sim.exited.wait(), 10)
        assert (sim.phase, sim.exit_code) == ("exited", 1)
        assert sim.exit_message == "simulated crash (fault crash-after:0.2)"
        assert lines[-1] == sim.exit_message
        assert sim.crashed is sim.exited


async def test_start_twice_is_refused() -> None:
    async with started({"NIM_SERVER_PORT": "0"}) as (sim, _):
        with pytest.raises(RuntimeError, match="only be started once"):
            await sim.start()


async def test_a_pod_without_volumes_never_writes_the_hosts_cache() -> None:
    env = {
        "NIMSIM_PATH_MAP": "{}",
        "NGC_API_KEY": "nvapi-test",
        "NIM_SERVER_PORT": "0",
        "NIMSIM_DOWNLOAD_DELAY": "0",
        "NIMSIM_LOAD_DELAY": "0",
    }
    async with started(env) as (sim, _):
        scratch = sim.config.host_path("/opt/nim/.cache")
        assert str(scratch) != "/opt/nim/.cache"
        await until(lambda: sim.phase == "ready")
        assert contents(scratch, "ngc/hub/*")
    assert not scratch.exists()


async def test_a_read_only_cache_serves_what_it_holds(tmp_path: Path) -> None:
    env = cache_env(tmp_path)
    async with started(env) as (warm, _):
        await until(lambda: warm.phase == "ready")
    read_only = {**env, "NIMSIM_READ_ONLY_PATHS": '["/opt/nim/.cache"]', "NGC_API_KEY": ""}
    async with started(read_only) as (sim, lines):
        await until(lambda: sim.phase == "ready")
    assert "/opt/nim/.cache is read-only, application may fail" in lines[0]
    other = {**read_only, "NIM_MODEL_PROFILE": "vllm-fp16-tp1", "NGC_API_KEY": "nvapi-x"}
    async with started(other) as (missing, _):
        await asyncio.wait_for(missing.exited.wait(), 10)
        assert missing.exit_message is not None
        assert "Read-only file system" in missing.exit_message
