"""Fetching profiles into the cache, with NGC's failure modes.

Both a serving start-up (profile not yet cached) and the ``download-to-cache``
utility come here. The simulated NGC accepts any ``NGC_API_KEY`` except one
containing ``invalid``; the download takes ``download_delay`` seconds spread
over the profile's files and writes them with :mod:`nimsim.cache`.

Failures raise :class:`DownloadError` carrying the lines a real NIM leaves at
the end of its log and the exit status. The last line is the one a person
needs, because a Job's ``terminationMessagePolicy: FallbackToLogsOnError`` turns
the last log lines into the termination message the operator reports.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nimsim import cache
from nimsim.catalog import Profile
from nimsim.config import SimConfig
from nimsim.logfmt import nim_log

Output = Callable[[str], None]

NGC_HOST = "api.ngc.nvidia.com"
EXIT_FAILURE = 1


@dataclass(frozen=True)
class DownloadResult:
    profiles: tuple[Profile, ...]
    bytes_written: int
    seconds: float


class DownloadError(Exception):
    """The download could not finish; ``lines`` end with the message a person needs."""

    def __init__(self, lines: Sequence[str], exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(lines[-1] if lines else "download failed")
        self.lines = tuple(lines)
        self.exit_code = exit_code

    @property
    def message(self) -> str:
        return self.lines[-1] if self.lines else "download failed"


def missing_key_lines() -> list[str]:
    return [
        nim_log("ERROR", "ngc_injector.py", 112, "NGC_API_KEY is not set."),
        "Error: The model is not present in NIM_CACHE_PATH and NGC_API_KEY is not set: "
        "set NGC_API_KEY (from your NGC API key Secret) so the model can be downloaded, "
        "or pre-populate the cache",
    ]


def auth_failure_lines(model: str) -> list[str]:
    repo = f"nim/{model.replace('.', '_')}"
    return [
        nim_log(
            "ERROR",
            "ngc_injector.py",
            118,
            f"Authentication Error: failed to fetch the model manifest from "
            f"https://{NGC_HOST}/v2/org/nim/{repo.removeprefix('nim/')}: HTTP 401 Unauthorized",
        ),
        "Error: Authentication failed (HTTP 401 Unauthorized) downloading "
        f"{repo} from NGC: NGC_API_KEY was rejected; check that the key is valid and "
        "has not expired",
    ]


def network_failure_lines() -> list[str]:
    return [
        nim_log(
            "ERROR",
            "ngc_injector.py",
            118,
            f"HTTPSConnectionPool(host='{NGC_HOST}', port=443): Max retries exceeded "
            "(Caused by NewConnectionError: Failed to establish a new connection: "
            "[Errno 101] Network is unreachable)",
        ),
        f"Error: Network failure downloading the model: cannot connect to {NGC_HOST}:443 "
        "(Network is unreachable); check the cluster's egress, HTTPS_PROXY and NO_PROXY",
    ]


def disk_full_lines(path: Path, written: int) -> list[str]:
    return [
        nim_log(
            "ERROR",
            "ngc_injector.py",
            130,
            f"OSError: [Errno {errno.ENOSPC}] No space left on device: '{path}'",
        ),
        f"Error: Disk full writing the model cache: [Errno {errno.ENOSPC}] No space left "
        f"on device after {written} bytes; enlarge the cache volume",
    ]


def os_error_lines(exc: OSError, written: int) -> list[str]:
    if exc.errno == errno.ENOSPC:
        return disk_full_lines(Path(exc.filename or ""), written)
    return [
        nim_log("ERROR", "ngc_injector.py", 130, f"OSError: {exc}"),
        f"Error: Cannot write the model cache: {exc.strerror or exc} ({exc.filename})",
    ]


async def download(
    config: SimConfig,
    profiles: Sequence[Profile],
    output: Output,
    *,
    seconds: float | None = None,
) -> DownloadResult:
    """Download ``profiles`` into the cache; raises DownloadError.

    Profiles already cached are skipped. ``seconds`` (default: the configured
    download delay, or the slow-download duration) is spread over the files of
    all profiles still to fetch.
    """
    if config.cache_path is None:
        raise DownloadError(
            ["Error: NIM_CACHE_PATH is not set, so there is nowhere to download the model to"]
        )
    root = config.host_path(config.cache_path)
    started = time.monotonic()
    todo = [p for p in profiles if not cache.is_cached(root, config.model, p)]
    for profile in profiles:
        if profile not in todo:
            output(
                nim_log(
                    "INFO",
                    "pre_download.py",
                    92,
                    f"Profile {profile.id} ({profile.name}) is already in the cache; skipping",
                )
            )
    if not todo:
        return DownloadResult(tuple(profiles), 0, 0.0)
    if config.ngc_api_key is None:
        raise DownloadError(missing_key_lines())
    fault = config.download_fault
    if fault == "auth-fail" or "invalid" in config.ngc_api_key.lower():
        await asyncio.sleep(min(0.2, config.download_delay))
        raise DownloadError(auth_failure_lines(config.model))
    if fault == "network-fail":
        await asyncio.sleep(min(0.5, config.download_delay))
        raise DownloadError(network_failure_lines())

    duration = seconds
    if duration is None:
        duration = (
            config.slow_download_seconds if fault == "slow-download" else config.download_delay
        )
    spaces = [(p, cache.workspace(config.model, p)) for p in todo]
    total_files = sum(len(space.files) for _, space in spaces)
    per_file = duration / max(total_files, 1)
    written = 0
    try:
        if config.is_read_only(config.cache_path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), config.cache_path)
        root.mkdir(parents=True, exist_ok=True)
        for index, (profile, space) in enumerate(spaces):
            output(
                nim_log(
                    "INFO",
                    "pre_download.py",
                    80,
                    f"Downloading profile {profile.id} ({profile.name}) "
                    f"[{index + 1}/{len(spaces)}] to {config.cache_path}",
                )
            )
            output(nim_log("INFO", "pre_download.py", 86, profile.describe()))
            for number, file in enumerate(space.files):
                await asyncio.sleep(per_file)
                if fault == "disk-full" and number == len(space.files) // 2:
                    raise OSError(
                        errno.ENOSPC,
                        os.strerror(errno.ENOSPC),
                        str(Path(config.cache_path) / "ngc" / "hub" / space.repo / "blobs"),
                    )
                written += cache.write_file(root, space, file)
                if fault == "slow-download":
                    output(
                        nim_log(
                            "INFO",
                            "pre_download.py",
                            101,
                            f"{file.name}: {written} bytes so far "
                            f"({_rate(written, time.monotonic() - started)})",
                        )
                    )
            cache.finish_profile(root, config.model, profile, space)
            output(
                nim_log(
                    "INFO",
                    "pre_download.py",
                    110,
                    f"Downloaded profile {profile.id} ({profile.name}): "
                    f"{len(space.files)} files, {space.bytes} bytes",
                )
            )
    except OSError as exc:
        raise DownloadError(os_error_lines(exc, written)) from exc
    return DownloadResult(tuple(profiles), written, time.monotonic() - started)


def _rate(written: int, elapsed: float) -> str:
    return f"{written / max(elapsed, 1e-3) / 1024:.1f} KiB/s"
