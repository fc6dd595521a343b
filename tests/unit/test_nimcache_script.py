"""The download Job's script (nimcache.params.SCRIPT), run by a real POSIX shell (dash, the
/bin/sh of Debian and Ubuntu images) against the NIM simulator's utilities, which print what a
real NIM's list-model-profiles and download-to-cache print. The command line is the Job's own:
`/bin/sh -ec SCRIPT nimcache ARGS...` with the arguments params derives from a spec.

What the script must do: pick the profiles (ids, names, all, a selector, or NIM's own choice),
download them, and write one JSON report to the termination log; on failure write nothing
there and end with the utility's own error as its last output (FallbackToLogsOnError turns
that into the termination message)."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nimop.core.meta import object_ref
from nimop.nimcache import models, params, status
from nimsim import catalog

SHELL = shutil.which("dash") or "/bin/sh"
IMAGE = "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3"
LLAMA = {p.name: p.id for p in catalog.profiles_for("meta/llama-3.1-8b-instruct")}
BASE: dict[str, Any] = {
    "image": {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3"},
    "authSecret": "ngc-api",
    "storage": {"size": "50Gi"},
}


@dataclass
class Run:
    code: int
    log: str
    report: str | None
    """What the script wrote to the termination log; None when it wrote nothing."""


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A directory standing for the NIM image's PATH: the utilities, as the simulator runs them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for utility in ("list-model-profiles", "download-to-cache"):
        wrapper = bin_dir / utility
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m nimsim {utility} "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def run(
    tmp_path: Path, image: Path, raw: dict[str, Any], key: str = "nvapi-good", **env: str
) -> Run:
    spec = models.NimCacheSpec.model_validate({**BASE, **raw})
    ref = object_ref(
        {
            "apiVersion": "nimop.dev/v1alpha1",
            "kind": "NimCache",
            "metadata": {"name": "c", "namespace": "n"},
        }
    )
    p = params.build(spec, ref)
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    termination = tmp_path / "termination-log"
    termination.unlink(missing_ok=True)
    container_env = {
        "PATH": f"{image}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path / "tmp"),
        "NGC_API_KEY": key,
        "NIM_CACHE_PATH": str(cache),
        "NIMOP_TERMINATION_LOG": str(termination),
        "NIMSIM_IMAGE": IMAGE,
        "NIMSIM_DOWNLOAD_DELAY": "0",
        **env,
    }
    done = subprocess.run(
        [SHELL, *p.command[1:], *p.args],
        env=container_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(
        done.returncode,
        done.stdout + done.stderr,
        termination.read_text() if termination.exists() else None,
    )


def report(result: Run) -> status.Report:
    assert result.code == 0, result.log
    assert result.report is not None, result.log
    parsed = status.parse_report(result.report)
    assert parsed is not None, result.report
    return parsed


def test_default_is_nims_own_choice(tmp_path: Path, image: Path) -> None:
    result = report(run(tmp_path, image, {}))
    # One H100 (the simulator's default): NIM picks TensorRT-LLM fp8 tp1.
    assert result.profiles == (LLAMA["tensorrt_llm-h100-fp8-tp1-throughput"],)
    assert result.count == 1
    assert result.bytes > 0


def test_profiles_by_name_and_id(tmp_path: Path, image: Path) -> None:
    wanted = ["vllm-fp16-tp1", LLAMA["tensorrt_llm-h100-fp8-tp1-throughput"]]
    result = report(run(tmp_path, image, {"profiles": wanted}))
    assert set(result.profiles) == {LLAMA["vllm-fp16-tp1"], wanted[1]}
    assert result.count == 2


def test_unknown_profile_name_fails_naming_it(tmp_path: Path, image: Path) -> None:
    result = run(tmp_path, image, {"profiles": ["vllm-fp16-tp99"]})
    assert result.code != 0
    assert result.report is None
    assert result.log.rstrip().splitlines()[-1] == (
        "Error: the image has no profile named vllm-fp16-tp99"
    )


def test_all_profiles(tmp_path: Path, image: Path) -> None:
    result = report(run(tmp_path, image, {"allProfiles": True}))
    assert set(result.profiles) == set(LLAMA.values())
    assert result.count == len(LLAMA) == 23


def test_selector(tmp_path: Path, image: Path) -> None:
    result = report(
        run(tmp_path, image, {"selector": {"engine": "tensorrt_llm", "gpu": "h100", "lora": False}})
    )
    assert {n for n, i in LLAMA.items() if i in result.profiles} == {
        "tensorrt_llm-h100-bf16-tp1-throughput",
        "tensorrt_llm-h100-bf16-tp2-latency",
        "tensorrt_llm-h100-fp8-tp1-throughput",
        "tensorrt_llm-h100-fp8-tp2-latency",
    }
    cached = json.loads((tmp_path / "cache" / "nimsim-manifest.json").read_text())
    assert len(json.dumps(cached)) > 0


def test_selector_without_a_match_fails_with_the_list(tmp_path: Path, image: Path) -> None:
    result = run(tmp_path, image, {"selector": {"gpu": "b200"}})
    assert result.code != 0
    assert result.report is None
    assert "tensorrt_llm-h100-fp8-tp1-throughput" in result.log, "the list is shown"
    assert result.log.rstrip().splitlines()[-1] == (
        "Error: no profile of this image matches the selector (gpu=b200)"
    )


def test_refused_key_fails_with_ngcs_words_last(tmp_path: Path, image: Path) -> None:
    result = run(tmp_path, image, {}, key="nvapi-invalid")
    assert result.code == 1
    assert result.report is None
    last = result.log.rstrip().splitlines()[-1]
    assert "Authentication failed (HTTP 401 Unauthorized)" in last
    assert status.classify(result.log) == "AuthenticationFailed"


def test_disk_full_fails(tmp_path: Path, image: Path) -> None:
    result = run(tmp_path, image, {}, NIMSIM_DOWNLOAD_FAULT="disk-full")
    assert result.code != 0
    assert result.report is None
    assert status.classify(result.log) == "DiskFull"


def test_network_failure_fails(tmp_path: Path, image: Path) -> None:
    result = run(tmp_path, image, {}, NIMSIM_DOWNLOAD_FAULT="network-fail")
    assert result.code != 0
    assert status.classify(result.log) == "NetworkError"


def test_proxy_ca_is_added_to_the_images_roots(tmp_path: Path, image: Path) -> None:
    ca = tmp_path / "corp-ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nCORPORATE\n-----END CERTIFICATE-----\n")
    probe = image / "download-to-cache"
    # A download-to-cache that shows which bundle the tooling would trust.
    probe.write_text(
        "#!/bin/sh\n"
        'echo "SSL_CERT_FILE=$SSL_CERT_FILE REQUESTS_CA_BUNDLE=$REQUESTS_CA_BUNDLE"\n'
        'cat "$SSL_CERT_FILE" > "$HOME/trusted"\n'
    )
    result = run(tmp_path, image, {"profiles": ["a" * 64]}, NIMOP_PROXY_CA=str(ca))
    assert result.code == 0, result.log
    trusted = (tmp_path / "trusted").read_text()
    assert trusted.endswith(ca.read_text())
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    if system.is_file():
        assert trusted.startswith(system.read_text()[:200])
    bundle = str(tmp_path / "tmp" / "nimop-cache" / "ca-bundle.crt")
    assert f"SSL_CERT_FILE={bundle} REQUESTS_CA_BUNDLE={bundle}" in result.log


def test_report_is_cut_to_fit_the_kubelets_limit(tmp_path: Path, image: Path) -> None:
    ids = [f"{i:064x}" for i in range(60)]
    (image / "download-to-cache").write_text("#!/bin/sh\necho downloaded\n")
    result = run(tmp_path, image, {"profiles": ids})
    parsed = report(result)
    assert parsed.count == 60
    assert len(parsed.profiles) == params.REPORT_PROFILES
    assert result.report is not None
    assert len(result.report.encode()) < 4096, "the kubelet keeps the last 4096 bytes"


def test_arguments_are_never_script_text(tmp_path: Path, image: Path) -> None:
    """A profile name is data for the shell, not code, whatever it looks like (the API refuses
    the worst already; this is the second line of defence)."""
    marker = tmp_path / "pwned"
    spec = models.NimCacheSpec.model_validate(BASE)
    ref = object_ref(
        {"apiVersion": "v", "kind": "NimCache", "metadata": {"name": "c", "namespace": "n"}}
    )
    p = params.build(spec, ref)
    hostile = f"x;touch {marker};`touch {marker}`;$(touch {marker})"
    done = subprocess.run(
        [SHELL, *p.command[1:], "profiles", hostile],
        env={
            "PATH": f"{image}:/usr/bin:/bin",
            "TMPDIR": str(tmp_path),
            "NIM_CACHE_PATH": str(tmp_path),
            "NIMSIM_IMAGE": IMAGE,
            "NIMOP_TERMINATION_LOG": str(tmp_path / "t"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert not marker.exists()
    assert (tmp_path / "nimop-cache").exists()
