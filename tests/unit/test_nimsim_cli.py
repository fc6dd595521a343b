"""The ``nimsim`` command as a real subprocess: start, serve, exit on signal or crash."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from nimsim.__main__ import build_parser, config_from_args, main
from nimsim.config import Faults


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("NIM_", "NIMSIM_"))}


async def _start(
    *command: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, str, list[str]]:
    """Start the CLI and wait for the line announcing its URL."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env or _clean_env(),
    )
    assert process.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(10):
        while True:
            raw = await process.stderr.readline()
            assert raw, f"nimsim exited early: {lines}"
            lines.append(raw.decode())
            match = re.search(r"listening on (http://\S+)", lines[-1])
            if match:
                return process, match.group(1), lines


async def _finish(process: asyncio.subprocess.Process, lines: list[str]) -> tuple[int, str]:
    assert process.stderr is not None
    async with asyncio.timeout(10):
        rest = await process.stderr.read()
        code = await process.wait()
    return code, "".join(lines) + rest.decode()


async def _wait_ready(url: str) -> list[int]:
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=url, timeout=2.0, trust_env=False) as client:
        async with asyncio.timeout(5):
            while not statuses or statuses[-1] != 200:
                statuses.append((await client.get("/v1/health/ready")).status_code)
                await asyncio.sleep(0.05)
        models = (await client.get("/v1/models")).json()
        assert models["data"][0]["id"] == "acme/cli-model"
    return statuses


async def test_module_serves_and_exits_zero_on_sigterm() -> None:
    process, url, lines = await _start(
        sys.executable,
        "-m",
        "nimsim",
        "--port",
        "0",
        "--load-delay",
        "0.5",
        "--model",
        "acme/cli-model",
    )
    try:
        assert url.startswith("http://127.0.0.1:")
        statuses = await _wait_ready(url)
        assert statuses[0] == 503
        process.send_signal(signal.SIGTERM)
        code, log = await _finish(process, lines)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0
    assert '"GET /v1/health/ready HTTP/1.1" 503' in log
    assert '"GET /v1/health/ready HTTP/1.1" 200' in log
    assert "loaded; ready to serve" in log


async def test_console_script_reads_env_and_exits_zero_on_sigint() -> None:
    script = Path(sys.executable).parent / "nimsim"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    env = {
        **_clean_env(),
        "NIM_SERVED_MODEL_NAME": "acme/cli-model",
        "NIM_SERVER_PORT": "0",
        "NIMSIM_LOAD_DELAY": "0",
    }
    process, url, lines = await _start(str(script), env=env)
    try:
        await _wait_ready(url)
        process.send_signal(signal.SIGINT)
        code, _ = await _finish(process, lines)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0


async def test_crash_after_exits_one() -> None:
    process, _, lines = await _start(
        sys.executable, "-m", "nimsim", "--port", "0", "--fault", "crash-after:0.2"
    )
    try:
        code, log = await _finish(process, lines)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 1
    assert "simulated crash" in log


def test_invalid_settings_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--fault", "explode"])
    assert exit_info.value.code == 2
    assert "unknown fault 'explode'" in capsys.readouterr().err


def test_flags_override_environment() -> None:
    args = build_parser().parse_args(
        ["--port", "0", "--model", "a/b", "--fault", "slow", "--fault", "flapping,wrong-model"]
    )
    env = {"NIM_SERVED_MODEL_NAME": "x/y", "NIM_SERVER_PORT": "9000", "NIMSIM_FAULT": "never-ready"}
    config = config_from_args(args, env)
    assert (config.model, config.port) == ("a/b", 0)
    assert config.faults == Faults(slow=True, flapping=True, wrong_model=True)
    config = config_from_args(build_parser().parse_args([]), env)
    assert (config.model, config.port) == ("x/y", 9000)
    assert config.faults == Faults(never_ready=True)


async def _run(*command: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_utility_subcommand_downloads_and_exits_zero(tmp_path: Path) -> None:
    env = {
        **_clean_env(),
        "NIM_CACHE_PATH": str(tmp_path),
        "NGC_API_KEY": "nvapi-test",
        "NIMSIM_DOWNLOAD_DELAY": "0",
    }
    code, out, _ = await _run(
        sys.executable, "-m", "nimsim", "download-to-cache", "-p", "vllm-fp16-tp1", env=env
    )
    assert code == 0, out
    assert out.splitlines()[-1].startswith(f"Cached 1 profile(s) in {tmp_path}: ")
    assert (tmp_path / "nimsim-manifest.json").is_file()
    code, out, _ = await _run(sys.executable, "-m", "nimsim", "list-model-profiles", env=env)
    assert (code, out.splitlines()[0]) == (0, "SYSTEM INFO")


async def test_utility_subcommand_failure_ends_with_the_error(tmp_path: Path) -> None:
    env = {**_clean_env(), "NIM_CACHE_PATH": str(tmp_path), "NGC_API_KEY": "nvapi-invalid"}
    code, out, _ = await _run(sys.executable, "-m", "nimsim", "nim_download_to_cache", env=env)
    assert code == 1
    assert out.splitlines()[-1].startswith("Error: Authentication failed (HTTP 401 Unauthorized)")


async def test_serve_with_a_failing_download_exits_with_its_status(tmp_path: Path) -> None:
    env = {**_clean_env(), "NIM_CACHE_PATH": str(tmp_path), "NIM_SERVER_PORT": "0"}
    code, _, err = await _run(sys.executable, "-m", "nimsim", "serve", env=env)
    assert code == 1
    assert "NGC_API_KEY is not set" in err.splitlines()[-1]


def test_help_names_the_utilities(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "download-to-cache" in text
    assert "list-model-profiles" in text
    assert "--download-fault" in text
