"""The NIM container's utility commands, run as a container's main process would run them.

A NIM for LLMs image ships utilities next to its server
(https://docs.nvidia.com/nim/large-language-models/latest/utilities.html);
NVIDIA's NIM Operator runs them in its NIMCache Job. Each has a ``nim_*`` name
and a dashed alias (e.g. https://docs.nvidia.com/nim/riva/nmt/latest/utilities.html:
"This function can also be called using its alias list-model-profiles"):

``list-model-profiles`` / ``nim_list_model_profiles``
    Prints SYSTEM INFO and MODEL PROFILES, split into compatible (and, among
    those, "With LoRA support") and incompatible with the detected GPUs.
``download-to-cache`` / ``nim_download_to_cache``
    ``--profiles/-p [PROFILES ...]`` (ids or names; none: the optimal profile),
    ``--all`` (every profile), ``--lora`` (the default LoRA profile; not with
    ``--profiles`` or ``--all``). Needs ``NGC_API_KEY``; writes into
    ``NIM_CACHE_PATH`` (``--model-cache-path`` overrides).
``create-model-store`` / ``nim_create_model_store``
    ``--profile/-p PROFILE --model-store/-m DIR``: copies a cached profile's
    files into DIR (downloading it first if needed).

The simulator extension: after a successful download the summary (profiles,
bytes, cache path) is also written as JSON to ``/dev/termination-log`` when
``NIMSIM_PATH_MAP`` maps that path, so a Job's pod reports what it wrote.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from collections.abc import Callable, Sequence
from typing import NoReturn

from nimsim import cache, catalog
from nimsim.catalog import Profile, ProfileError
from nimsim.config import SimConfig
from nimsim.download import DownloadError, download
from nimsim.logfmt import nim_log
from nimsim.rootfs import Rootfs

Output = Callable[[str], None]

LIST_PROFILES = ("list-model-profiles", "nim_list_model_profiles")
DOWNLOAD = ("download-to-cache", "nim_download_to_cache")
CREATE_STORE = ("create-model-store", "nim_create_model_store")
ENTRYPOINTS: frozenset[str] = frozenset((*LIST_PROFILES, *DOWNLOAD, *CREATE_STORE))
"""Command names a container may run (argv[0] of :func:`run`)."""

TERMINATION_LOG = "/dev/termination-log"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

_GPU_DEVICE_IDS = {
    "H100": "2330:10de",
    "A100": "20b2:10de",
    "L40S": "26b9:10de",
    "A10G": "2237:10de",
}
_GPU_NAMES = {
    "H100": "NVIDIA H100 80GB HBM3 (H100 80GB)",
    "A100": "NVIDIA A100-SXM4-80GB (A100 80GB)",
    "L40S": "NVIDIA L40S (L40S)",
    "A10G": "NVIDIA A10G (A10G)",
}


class _UsageError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse that writes to the container log instead of the process's stdout."""

    def __init__(self, output: Output, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._output = output

    def _print_message(self, message: str, file: object = None) -> None:
        for line in message.rstrip("\n").splitlines():
            self._output(line)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message)
        raise _UsageError(status)


async def run(argv: Sequence[str], config: SimConfig, output: Output) -> int:
    """Run one utility; argv[0] is its name. Returns the process exit status."""
    if not argv or argv[0] not in ENTRYPOINTS:
        name = argv[0] if argv else ""
        output(f"{name}: not a NIM utility (known: {', '.join(sorted(ENTRYPOINTS))})")
        return EXIT_USAGE
    command, args = argv[0], list(argv[1:])
    rootfs = Rootfs(config)
    config = rootfs.config
    try:
        if command in LIST_PROFILES:
            return _list_profiles(command, args, config, output)
        if command in DOWNLOAD:
            return await _download_to_cache(command, args, config, output)
        return await _create_model_store(command, args, config, output)
    except _UsageError as exc:
        return exc.code
    finally:
        rootfs.remove()


# -- list-model-profiles ---------------------------------------------------------------------


def _list_profiles(command: str, args: list[str], config: SimConfig, output: Output) -> int:
    parser = _Parser(
        output,
        prog=command,
        description="Prints the system information detected by NIM, and the list of all "
        "profiles for the chosen NIM.",
    )
    parser.add_argument("--manifest-file", "-m", help="model manifest file (ignored: built in)")
    parser.parse_args(args)
    system = catalog.system_of(config)
    profiles = catalog.profiles_for(config.model)
    output("SYSTEM INFO")
    output("- Free GPUs:")
    device = _GPU_DEVICE_IDS.get(system.gpu, "0000:10de")
    name = _GPU_NAMES.get(system.gpu, f"NVIDIA {system.gpu}")
    for index in range(system.count):
        output(f"  -  [{device}] ({index}) {name} [current utilization: 0%]")
    output("MODEL PROFILES")
    compatible = [p for p in profiles if system.compatible(p)]
    plain = [p for p in compatible if not p.lora]
    lora = [p for p in compatible if p.lora]
    output("- Compatible with system and runnable:" + ("" if compatible else " <None>"))
    for profile in plain:
        output(f"  - {profile.id} ({profile.name})")
    if lora:
        output("  - With LoRA support:")
        for profile in lora:
            output(f"    - {profile.id} ({profile.name})")
    incompatible = [p for p in profiles if not system.compatible(p)]
    output("- Incompatible with system:" + ("" if incompatible else " <None>"))
    for profile in incompatible:
        output(f"  - {profile.id} ({profile.name})")
    return EXIT_OK


# -- download-to-cache -----------------------------------------------------------------------


async def _download_to_cache(
    command: str, args: list[str], config: SimConfig, output: Output
) -> int:
    parser = _Parser(
        output,
        prog=command,
        description="Downloads selected or default model profile(s) to NIM cache. Can be used "
        "to pre-cache profiles prior to deployment. Requires NGC_API_KEY in environment.",
    )
    parser.add_argument(
        "--profiles",
        "-p",
        nargs="*",
        default=None,
        metavar="PROFILES",
        help="Profile hashes (or names) to download. If none are provided, the optimal "
        "profile is downloaded. Multiple profiles can be specified separated by spaces.",
    )
    parser.add_argument("--all", action="store_true", help="Download all profiles to cache")
    parser.add_argument(
        "--lora",
        action="store_true",
        help="Download the default LoRA profile. Not with --profiles or --all.",
    )
    parser.add_argument("--manifest-file", "-m", help="model manifest file (ignored: built in)")
    parser.add_argument(
        "--model-cache-path", help="cache directory (default: NIM_CACHE_PATH, /opt/nim/.cache)"
    )
    parsed = parser.parse_args(args)
    if parsed.lora and (parsed.profiles or parsed.all):
        parser.error("--lora cannot be combined with --profiles or --all")
    if parsed.all and parsed.profiles:
        parser.error("--all cannot be combined with --profiles")
    cache_path = parsed.model_cache_path or config.cache_path or "/opt/nim/.cache"
    config = _with_cache(config, cache_path)

    profiles = catalog.profiles_for(config.model)
    try:
        chosen = _chosen_profiles(config, profiles, parsed.profiles, parsed.all, parsed.lora)
    except ProfileError as exc:
        output(nim_log("ERROR", "pre_download.py", 61, str(exc)))
        output(f"Error: {exc}")
        return EXIT_FAILURE
    for profile in chosen:
        output(
            nim_log(
                "INFO", "pre_download.py", 70, f"Selected profile: {profile.id} ({profile.name})"
            )
        )
    try:
        result = await download(config, chosen, output)
    except DownloadError as exc:
        for line in exc.lines:
            output(line)
        return exc.exit_code
    root = config.host_path(cache_path)
    entries = cache.cached_profiles(root)
    total = sum(int(entries.get(p.id, {}).get("bytes", 0)) for p in chosen)
    summary = {
        "cachePath": cache_path,
        "profiles": [{"id": p.id, "name": p.name} for p in chosen],
        "bytes": total,
        "bytesWritten": result.bytes_written,
    }
    _write_termination_log(config, summary)
    names = ", ".join(f"{p.id} ({p.name})" if len(chosen) <= 3 else p.name for p in chosen)
    output(
        f"Cached {len(chosen)} profile(s) in {cache_path}: {names}; {total} bytes "
        f"({result.bytes_written} written by this run)"
    )
    return EXIT_OK


def _chosen_profiles(
    config: SimConfig,
    profiles: Sequence[Profile],
    wanted: list[str] | None,
    everything: bool,
    lora: bool,
) -> list[Profile]:
    if everything:
        return list(profiles)
    if wanted:
        chosen: list[Profile] = []
        for name in wanted:
            profile = catalog.find_profile(profiles, name)
            if profile not in chosen:
                chosen.append(profile)
        return chosen
    system = catalog.system_of(config)
    if lora:
        loras = [p for p in profiles if p.lora and system.compatible(p)]
        if not loras:
            raise ProfileError("No LoRA profile is compatible with the detected hardware")
        best = catalog.select_profile(
            [catalog.profile_from_name(p.id, p.name.removesuffix("-lora")) for p in loras],
            system,
            None,
        )
        return [next(p for p in loras if p.id == best.id)]
    return [catalog.select_profile(profiles, system, config.model_profile)]


def _with_cache(config: SimConfig, cache_path: str) -> SimConfig:
    return dataclasses.replace(config, cache_path=cache_path)


def _write_termination_log(config: SimConfig, summary: dict[str, object]) -> None:
    target = config.host_path(TERMINATION_LOG)
    if not config.in_container or str(target) == TERMINATION_LOG:
        return  # not standing in for a container: never touch the host's /dev
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(summary, separators=(",", ":")))
    except OSError:
        pass  # the summary is also the last log line


# -- create-model-store ----------------------------------------------------------------------


async def _create_model_store(
    command: str, args: list[str], config: SimConfig, output: Output
) -> int:
    parser = _Parser(
        output,
        prog=command,
        description="Extracts the files of a cached profile into a model store directory.",
    )
    parser.add_argument("--profile", "-p", required=True, help="profile id or name")
    parser.add_argument("--model-store", "-m", required=True, help="directory to write")
    parsed = parser.parse_args(args)
    cache_path = config.cache_path or "/opt/nim/.cache"
    config = _with_cache(config, cache_path)
    try:
        profile = catalog.find_profile(catalog.profiles_for(config.model), parsed.profile)
    except ProfileError as exc:
        output(f"Error: {exc}")
        return EXIT_FAILURE
    try:
        await download(config, [profile], output)
    except DownloadError as exc:
        for line in exc.lines:
            output(line)
        return exc.exit_code
    space = cache.workspace(config.model, profile)
    source = cache.snapshot_dir(config.host_path(cache_path), space)
    target = config.host_path(parsed.model_store)
    try:
        target.mkdir(parents=True, exist_ok=True)
        for file in space.files:
            shutil.copyfile(source / file.name, target / file.name)
    except OSError as exc:
        output(f"Error: cannot write the model store {parsed.model_store}: {exc.strerror or exc}")
        return EXIT_FAILURE
    output(
        nim_log(
            "INFO",
            "create_model_store.py",
            52,
            f"Model store for {profile.id} ({profile.name}) created at {parsed.model_store}",
        )
    )
    return EXIT_OK
