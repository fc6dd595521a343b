"""Simulator settings, read from the same environment a NIM pod's Deployment sets.

Reading configuration from the environment (rather than only from flags) lets a
pod runner start the simulator with exactly the env block the operator rendered,
so the simulator sees what a real NIM container would see.

Environment variables a real NIM reads
--------------------------------------
``NIM_SERVED_MODEL_NAME``
    Model id served. Falls back to ``NIMSIM_MODEL``, then to a name derived from
    ``NIMSIM_IMAGE`` (see :func:`model_from_image`), then to
    ``meta/llama-3.1-8b-instruct``.
``NIM_SERVER_PORT`` (8000)
    Listen port. Port 0 picks a free port.
``NIM_MAX_MODEL_LEN``
    Context length in tokens; by default the model's own (131072 for Llama 3.1,
    see :mod:`nimsim.catalog`).
``NIM_CACHE_PATH``
    Where model profiles are downloaded and looked for. When unset, the real
    default ``/opt/nim/.cache`` applies if ``NIMSIM_PATH_MAP`` is set (the
    caller is modelling a container's filesystem); otherwise no cache is
    modelled and the model counts as present (no download phase), so running
    ``nimsim`` on a workstation never writes to ``/opt``.
``NIM_MODEL_PROFILE``
    Profile to serve or download, by id or by name (see :mod:`nimsim.catalog`).
``NIM_PEFT_SOURCE``
    Directory of LoRA adapters, one sub-directory per adapter.
``NGC_API_KEY`` (or ``NGC_CLI_API_KEY``, which wins when both are set)
    Needed to download; a value containing ``invalid`` is rejected by the
    simulated NGC with a 401.

Simulator settings
------------------
``NIMSIM_HOST`` (127.0.0.1)
    Listen address.
``NIMSIM_PATH_MAP``
    JSON object mapping container paths to host paths, e.g.
    ``{"/opt/nim/.cache": "/tmp/lab/volumes/pvc-1"}``. Every path the simulator
    reads or writes goes through :meth:`SimConfig.host_path`, because in the lab
    the simulator runs on the host inside the pod runner's process. Setting it
    at all (even to ``{}``) says "this is a container": paths no entry covers are
    the container's own, discarded filesystem (:mod:`nimsim.rootfs`), never the
    host's.
``NIMSIM_READ_ONLY_PATHS``
    JSON array of container paths mounted read-only: writing under them fails
    with ``EROFS``, as a NIM downloading into a read-only cache volume does.
``NIMSIM_LOAD_DELAY`` (2.0), ``NIMSIM_DOWNLOAD_DELAY`` (1.0)
    Seconds spent loading the model once listening, and downloading a profile
    that is not in the cache (the port is closed meanwhile).
``NIMSIM_FAULT``
    Comma-separated fault modes: ``never-ready``, ``flapping``, ``slow``,
    ``wrong-model``, ``crash-after:N``.
``NIMSIM_DOWNLOAD_FAULT``
    One download fault: ``auth-fail`` (NGC answers 401), ``network-fail``
    (NGC unreachable), ``disk-full`` (ENOSPC while writing), ``slow-download``
    (the download crawls for ``NIMSIM_SLOW_DOWNLOAD_SECONDS``, default 30, and
    then succeeds).
``NIMSIM_FLAP_PERIOD`` (2.0), ``NIMSIM_SLOW_SECONDS`` (3.0), ``NIMSIM_WRONG_MODEL``
(``nimsim/wrong-model``)
    Tuning for the fault modes above.
``NIMSIM_TOKEN_DELAY`` (0.0)
    Seconds spent per generated token, so load tests see requests in flight.
``NIMSIM_MAX_CONCURRENCY`` (256)
    Requests generated at once; more wait (``num_requests_waiting``).
``NIMSIM_GPU_PRODUCT`` (``H100``), ``NIMSIM_GPU_COUNT``
    The GPUs the simulated container sees, for profile selection; the count
    defaults to the number of ids in ``NVIDIA_VISIBLE_DEVICES``, else 1.
``NIMSIM_OWNED_BY``
    ``owned_by`` of the model object; defaults to the model id's first segment
    (``meta``), as the NIM API reference shows.

Image tag conventions
---------------------
Tests pick a behaviour by image tag alone, so a Deployment that names
``nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3-never-ready`` behaves badly
without any extra env. :func:`fault_from_image_tag` maps tag words to env
overrides; words are separated from their neighbours by ``-``, ``_`` or ``.``:

====================  ===============================================
tag contains          env override
====================  ===============================================
``never-ready``       ``NIMSIM_FAULT`` gains ``never-ready``
``flapping``          ``NIMSIM_FAULT`` gains ``flapping``
``slow``              ``NIMSIM_FAULT`` gains ``slow``
``wrong-model``       ``NIMSIM_FAULT`` gains ``wrong-model``
``crash-after-N``     ``NIMSIM_FAULT`` gains ``crash-after:N``
``load-Ns``           ``NIMSIM_LOAD_DELAY=N`` (N may be fractional)
``download-Ns``       ``NIMSIM_DOWNLOAD_DELAY=N``
``auth-fail``         ``NIMSIM_DOWNLOAD_FAULT=auth-fail``
``network-fail``      ``NIMSIM_DOWNLOAD_FAULT=network-fail``
``disk-full``         ``NIMSIM_DOWNLOAD_FAULT=disk-full``
``slow-download``     ``NIMSIM_DOWNLOAD_FAULT=slow-download``
====================  ===============================================

Examples: ``1.3.3-wrong-model`` -> ``{"NIMSIM_FAULT": "wrong-model"}``,
``2.0-load-5s`` -> ``{"NIMSIM_LOAD_DELAY": "5"}``, ``1.3.3`` -> ``{}``.
:meth:`SimConfig.from_env` applies these to ``NIMSIM_IMAGE``'s tag itself, with
explicitly set env variables taking precedence.
"""

from __future__ import annotations

import dataclasses
import json
import math
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

from nimsim import catalog

DEFAULT_MODEL = "meta/llama-3.1-8b-instruct"
DEFAULT_WRONG_MODEL = "nimsim/wrong-model"
DEFAULT_CACHE_PATH = "/opt/nim/.cache"

DownloadFault = Literal["auth-fail", "network-fail", "disk-full", "slow-download"]
DOWNLOAD_FAULTS: tuple[DownloadFault, ...] = get_args(DownloadFault)

_NUMBER = r"\d+(?:\.\d+)?"
# A tag word must not be glued to other letters or digits ("slowest" is not "slow").
_WORD_LEFT = r"(?<![A-Za-z0-9])"
_WORD_RIGHT = r"(?![A-Za-z0-9])"
_TAG_FLAGS = ("never-ready", "flapping", "slow", "wrong-model")
_TAG_CRASH = re.compile(rf"{_WORD_LEFT}crash-after-({_NUMBER}){_WORD_RIGHT}")
_TAG_LOAD = re.compile(rf"{_WORD_LEFT}load-({_NUMBER})s{_WORD_RIGHT}")
_TAG_DOWNLOAD = re.compile(rf"{_WORD_LEFT}download-({_NUMBER})s{_WORD_RIGHT}")


def _tag_word(word: str) -> re.Pattern[str]:
    return re.compile(rf"{_WORD_LEFT}{re.escape(word)}{_WORD_RIGHT}")


@dataclass(frozen=True)
class Faults:
    """Misbehaviours of a running server the operator must cope with; all off by default."""

    never_ready: bool = False
    flapping: bool = False
    slow: bool = False
    wrong_model: bool = False
    crash_after: float | None = None

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """Parse the ``NIMSIM_FAULT`` syntax, rejecting unknown modes loudly.

        A typo such as ``never_ready`` silently doing nothing would make a fault
        test pass for the wrong reason, hence the error.
        """
        flags: set[str] = set()
        crash_after: float | None = None
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            name, sep, arg = item.partition(":")
            if name == "crash-after":
                if not sep:
                    raise ValueError("fault 'crash-after' needs seconds, e.g. 'crash-after:3'")
                crash_after = _parse_float("crash-after", arg, minimum=0.0)
            elif name in _TAG_FLAGS and not sep:
                flags.add(name)
            else:
                known = ", ".join([*_TAG_FLAGS, "crash-after:N"])
                hint = " (download faults go in NIMSIM_DOWNLOAD_FAULT)"
                raise ValueError(
                    f"unknown fault {item!r} (known: {known})"
                    + (hint if name in DOWNLOAD_FAULTS else "")
                )
        return cls(
            never_ready="never-ready" in flags,
            flapping="flapping" in flags,
            slow="slow" in flags,
            wrong_model="wrong-model" in flags,
            crash_after=crash_after,
        )

    def __str__(self) -> str:
        parts = [name for name in _TAG_FLAGS if getattr(self, name.replace("-", "_")) is True]
        if self.crash_after is not None:
            parts.append(f"crash-after:{_format_number(self.crash_after)}")
        return ",".join(parts)


@dataclass(frozen=True)
class SimConfig:
    """Everything one simulator instance needs; immutable so it can be shared freely.

    Paths (``cache_path``, ``peft_source``) are container paths, as the pod
    spec names them; :meth:`host_path` turns them into the paths to open.
    """

    model: str = DEFAULT_MODEL
    host: str = "127.0.0.1"
    port: int = 8000
    max_model_len: int | None = None
    load_delay: float = 2.0
    faults: Faults = dataclasses.field(default_factory=Faults)
    flap_period: float = 2.0
    slow_seconds: float = 3.0
    wrong_model_name: str = DEFAULT_WRONG_MODEL
    token_delay: float = 0.0
    owned_by: str | None = None
    path_map: tuple[tuple[str, str], ...] = ()
    read_only_paths: tuple[str, ...] = ()
    in_container: bool = False
    """True when ``NIMSIM_PATH_MAP`` is set (even to ``{}``): the simulator stands in for a
    container, so paths no volume covers belong to its own filesystem (:mod:`nimsim.rootfs`)."""
    cache_path: str | None = None
    model_profile: str | None = None
    peft_source: str | None = None
    ngc_api_key: str | None = dataclasses.field(default=None, repr=False)
    download_delay: float = 1.0
    download_fault: DownloadFault | None = None
    slow_download_seconds: float = 30.0
    max_concurrency: int = 256
    image: str = ""
    gpu_product: str = "H100"
    gpu_count: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SimConfig:
        """Build a config from a NIM-style environment; raises ValueError on bad values."""
        image = env.get("NIMSIM_IMAGE", "").strip()
        if image:
            env = {**fault_from_image_tag(image_tag(image)), **env}

        def get(name: str) -> str | None:
            value = env.get(name)
            if value is None or not value.strip():
                return None
            return value.strip()

        model = get("NIM_SERVED_MODEL_NAME") or get("NIMSIM_MODEL")
        if model is None:
            model = model_from_image(image) if image else DEFAULT_MODEL

        defaults = cls()

        def number(name: str, default: float, minimum: float = 0.0) -> float:
            value = get(name)
            return default if value is None else _parse_float(name, value, minimum=minimum)

        def integer(name: str, default: int, minimum: int) -> int:
            value = get(name)
            return default if value is None else _parse_int(name, value, minimum=minimum)

        max_model_len = get("NIM_MAX_MODEL_LEN")
        path_map_text = get("NIMSIM_PATH_MAP")
        path_map = parse_path_map(path_map_text or "")
        in_container = path_map_text is not None
        cache_path = get("NIM_CACHE_PATH") or (DEFAULT_CACHE_PATH if in_container else None)
        return cls(
            model=model,
            host=get("NIMSIM_HOST") or defaults.host,
            port=integer("NIM_SERVER_PORT", defaults.port, minimum=0),
            max_model_len=(
                None
                if max_model_len is None
                else _parse_int("NIM_MAX_MODEL_LEN", max_model_len, minimum=1)
            ),
            load_delay=number("NIMSIM_LOAD_DELAY", defaults.load_delay),
            faults=Faults.parse(get("NIMSIM_FAULT") or ""),
            flap_period=number("NIMSIM_FLAP_PERIOD", defaults.flap_period, minimum=0.001),
            slow_seconds=number("NIMSIM_SLOW_SECONDS", defaults.slow_seconds),
            wrong_model_name=get("NIMSIM_WRONG_MODEL") or defaults.wrong_model_name,
            token_delay=number("NIMSIM_TOKEN_DELAY", defaults.token_delay),
            owned_by=get("NIMSIM_OWNED_BY"),
            path_map=path_map,
            in_container=in_container,
            read_only_paths=parse_read_only_paths(get("NIMSIM_READ_ONLY_PATHS") or ""),
            cache_path=cache_path,
            model_profile=get("NIM_MODEL_PROFILE"),
            peft_source=get("NIM_PEFT_SOURCE"),
            ngc_api_key=get("NGC_CLI_API_KEY") or get("NGC_API_KEY"),
            download_delay=number("NIMSIM_DOWNLOAD_DELAY", defaults.download_delay),
            download_fault=_download_fault(get("NIMSIM_DOWNLOAD_FAULT")),
            slow_download_seconds=number(
                "NIMSIM_SLOW_DOWNLOAD_SECONDS", defaults.slow_download_seconds
            ),
            max_concurrency=integer("NIMSIM_MAX_CONCURRENCY", defaults.max_concurrency, 1),
            image=image,
            gpu_product=(get("NIMSIM_GPU_PRODUCT") or defaults.gpu_product).upper(),
            gpu_count=integer("NIMSIM_GPU_COUNT", _visible_gpus(get("NVIDIA_VISIBLE_DEVICES")), 1),
        )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {self.max_model_len}")
        if self.flap_period <= 0:
            raise ValueError(f"flap_period must be > 0, got {self.flap_period}")
        if self.gpu_count < 1:
            raise ValueError(f"gpu_count must be >= 1, got {self.gpu_count}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        for name in (
            "load_delay",
            "slow_seconds",
            "token_delay",
            "download_delay",
            "slow_download_seconds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.download_fault is not None and self.download_fault not in DOWNLOAD_FAULTS:
            raise ValueError(
                f"download_fault must be one of {', '.join(DOWNLOAD_FAULTS)}, "
                f"got {self.download_fault!r}"
            )
        for container, host in self.path_map:
            _check_mapping(container, host)

    @property
    def served_model(self) -> str:
        """The id actually served, which differs from ``model`` under ``wrong-model``."""
        return self.wrong_model_name if self.faults.wrong_model else self.model

    @property
    def context_len(self) -> int:
        """The context served: ``NIM_MAX_MODEL_LEN`` if set, else the model's own."""
        return self.max_model_len or catalog.context_length(self.model)

    @property
    def owner(self) -> str:
        return self.owned_by or self.served_model.split("/", 1)[0]

    def host_path(self, container_path: str) -> Path:
        """Where ``container_path`` lives on this host: the longest mapped prefix wins.

        Prefixes match whole path components, so ``/opt/nim/.cache`` maps
        ``/opt/nim/.cache/ngc`` but not ``/opt/nim/.cache2``. Unmapped paths are
        returned unchanged.
        """
        path = posixpath.normpath(container_path)
        best: tuple[str, str] | None = None
        for container, host in self.path_map:
            prefix = posixpath.normpath(container)
            if _inside(path, prefix) and (best is None or len(prefix) > len(best[0])):
                best = (prefix, host)
        if best is None:
            return Path(path)
        rest = posixpath.relpath(path, best[0])
        return Path(best[1]) if rest == "." else Path(best[1]) / rest

    def is_read_only(self, container_path: str) -> bool:
        """Whether writing ``container_path`` would hit a read-only mount."""
        path = posixpath.normpath(container_path)
        return any(_inside(path, prefix) for prefix in self.read_only_paths)


def parse_read_only_paths(text: str) -> tuple[str, ...]:
    """Decode ``NIMSIM_READ_ONLY_PATHS`` (a JSON array of absolute container paths)."""
    if not text:
        return ()
    try:
        raw: object = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"NIMSIM_READ_ONLY_PATHS is not valid JSON: {exc}") from None
    if not isinstance(raw, list) or not all(isinstance(p, str) and p.startswith("/") for p in raw):
        raise ValueError(
            "NIMSIM_READ_ONLY_PATHS must be a JSON array of absolute paths, "
            'e.g. ["/opt/nim/.cache"]'
        )
    return tuple(posixpath.normpath(p) for p in raw)


def parse_path_map(text: str) -> tuple[tuple[str, str], ...]:
    """Decode ``NIMSIM_PATH_MAP`` (a JSON object of absolute path -> absolute path)."""
    if not text:
        return ()
    try:
        raw: object = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"NIMSIM_PATH_MAP is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(
            'NIMSIM_PATH_MAP must be a JSON object such as {"/opt/nim/.cache": "/tmp/cache"}'
        )
    pairs: list[tuple[str, str]] = []
    for container, host in cast(dict[object, object], raw).items():
        if not isinstance(host, str):
            raise ValueError(f"NIMSIM_PATH_MAP[{container!r}] must be a string path")
        _check_mapping(str(container), host)
        pairs.append((str(container), host))
    return tuple(sorted(pairs))


def _inside(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _check_mapping(container: str, host: str) -> None:
    if not container.startswith("/"):
        raise ValueError(f"NIMSIM_PATH_MAP key {container!r} must be an absolute container path")
    if not host.startswith("/"):
        raise ValueError(f"NIMSIM_PATH_MAP[{container!r}] = {host!r} must be an absolute host path")


def _visible_gpus(devices: str | None) -> int:
    """GPUs a container sees from ``NVIDIA_VISIBLE_DEVICES`` (set by the device plugin)."""
    if devices is None or devices in ("all", "none", "void"):
        return 1
    return max(1, len([d for d in devices.split(",") if d.strip()]))


def _download_fault(value: str | None) -> DownloadFault | None:
    if value is None:
        return None
    if value not in DOWNLOAD_FAULTS:
        raise ValueError(
            f"NIMSIM_DOWNLOAD_FAULT must be one of {', '.join(DOWNLOAD_FAULTS)}, got {value!r}"
        )
    return value


def image_tag(image: str) -> str:
    """Return the tag of an image reference, or "" when it has none."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.partition(":")[2]


def model_from_image(image: str) -> str:
    """Derive a model id from a NIM image reference the way NIM images are named.

    ``nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3`` -> ``meta/llama-3.1-8b-instruct``.
    """
    name = image.strip().split("@", 1)[0]
    segments = name.split("/")
    last = segments[-1].partition(":")[0]
    segments[-1] = last
    first = segments[0]
    if len(segments) > 1 and ("." in first or ":" in first or first == "localhost"):
        segments = segments[1:]
    if len(segments) > 1 and segments[0] == "nim":
        segments = segments[1:]
    model = "/".join(s for s in segments if s)
    return model or DEFAULT_MODEL


def fault_from_image_tag(tag: str) -> dict[str, str]:
    """Map an image tag to simulator env overrides (conventions in the module docstring).

    A full image reference is accepted too; only its tag is inspected, so a
    repository called ``slow-models`` does not turn on the ``slow`` fault.
    """
    if "/" in tag or "@" in tag:
        tag = image_tag(tag)
    overrides: dict[str, str] = {}
    for fault in DOWNLOAD_FAULTS:
        pattern = _tag_word(fault)
        if pattern.search(tag):
            overrides["NIMSIM_DOWNLOAD_FAULT"] = fault
            # "slow-download" must not also turn on the serving fault "slow".
            tag = pattern.sub("", tag)
    faults = [flag for flag in _TAG_FLAGS if _tag_word(flag).search(tag)]
    crash = _TAG_CRASH.search(tag)
    if crash:
        faults.append(f"crash-after:{crash.group(1)}")
    if faults:
        overrides["NIMSIM_FAULT"] = ",".join(faults)
    load = _TAG_LOAD.search(tag)
    if load:
        overrides["NIMSIM_LOAD_DELAY"] = load.group(1)
    download = _TAG_DOWNLOAD.search(tag)
    if download:
        overrides["NIMSIM_DOWNLOAD_DELAY"] = download.group(1)
    return overrides


def _parse_float(name: str, value: str, *, minimum: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum:g}, got {value!r}")
    return number


def _parse_int(name: str, value: str, *, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return number


def _format_number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)
