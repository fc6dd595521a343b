"""Simulator settings, read from the same environment a NIM pod's Deployment sets.

Reading configuration from the environment (rather than only from flags) lets a
pod runner start the simulator with exactly the env block the operator rendered,
so the simulator sees what a real NIM container would see.

Environment variables
---------------------
``NIM_SERVED_MODEL_NAME``
    Model id served. Falls back to ``NIMSIM_MODEL``, then to a name derived from
    ``NIMSIM_IMAGE`` (see :func:`model_from_image`), then to
    ``meta/llama-3.1-8b-instruct``.
``NIM_SERVER_PORT`` (8000), ``NIMSIM_HOST`` (127.0.0.1)
    Listen address. Port 0 picks a free port.
``NIM_MAX_MODEL_LEN`` (8192)
    Context length in tokens.
``NIMSIM_LOAD_DELAY`` (2.0)
    Seconds from start until the model counts as loaded.
``NIMSIM_FAULT``
    Comma-separated fault modes: ``never-ready``, ``flapping``, ``slow``,
    ``wrong-model``, ``crash-after:N``.
``NIMSIM_FLAP_PERIOD`` (2.0), ``NIMSIM_SLOW_SECONDS`` (3.0), ``NIMSIM_WRONG_MODEL``
(``nimsim/wrong-model``)
    Tuning for the fault modes above.
``NIMSIM_TOKEN_DELAY`` (0.0)
    Seconds spent per generated token, so load tests see requests in flight.
``NIMSIM_OWNED_BY``
    ``owned_by`` of the model object; defaults to the model id's first segment.

Image tag conventions
---------------------
Tests pick a failure mode by image tag alone, so a Deployment that names
``nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3-never-ready`` behaves badly
without any extra env. :func:`fault_from_image_tag` maps tag words to env
overrides; words are separated from their neighbours by ``-``, ``_`` or ``.``:

==================  =======================================
tag contains        env override
==================  =======================================
``never-ready``     ``NIMSIM_FAULT`` gains ``never-ready``
``flapping``        ``NIMSIM_FAULT`` gains ``flapping``
``slow``            ``NIMSIM_FAULT`` gains ``slow``
``wrong-model``     ``NIMSIM_FAULT`` gains ``wrong-model``
``crash-after-N``   ``NIMSIM_FAULT`` gains ``crash-after:N``
``load-Ns``         ``NIMSIM_LOAD_DELAY=N`` (N may be fractional)
==================  =======================================

Examples: ``1.3.3-wrong-model`` -> ``{"NIMSIM_FAULT": "wrong-model"}``,
``2.0-load-5s`` -> ``{"NIMSIM_LOAD_DELAY": "5"}``, ``1.3.3`` -> ``{}``.
:meth:`SimConfig.from_env` applies these to ``NIMSIM_IMAGE``'s tag itself, with
explicitly set env variables taking precedence.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MODEL = "meta/llama-3.1-8b-instruct"
DEFAULT_WRONG_MODEL = "nimsim/wrong-model"

_NUMBER = r"\d+(?:\.\d+)?"
# A tag word must not be glued to other letters or digits ("slowest" is not "slow").
_WORD_LEFT = r"(?<![A-Za-z0-9])"
_WORD_RIGHT = r"(?![A-Za-z0-9])"
_TAG_FLAGS = ("never-ready", "flapping", "slow", "wrong-model")
_TAG_CRASH = re.compile(rf"{_WORD_LEFT}crash-after-({_NUMBER}){_WORD_RIGHT}")
_TAG_LOAD = re.compile(rf"{_WORD_LEFT}load-({_NUMBER})s{_WORD_RIGHT}")


@dataclass(frozen=True)
class Faults:
    """Misbehaviours the operator must cope with; all off by default."""

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
                raise ValueError(f"unknown fault {item!r} (known: {known})")
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
    """Everything one simulator instance needs; immutable so it can be shared freely."""

    model: str = DEFAULT_MODEL
    host: str = "127.0.0.1"
    port: int = 8000
    max_model_len: int = 8192
    load_delay: float = 2.0
    faults: Faults = dataclasses.field(default_factory=Faults)
    flap_period: float = 2.0
    slow_seconds: float = 3.0
    wrong_model_name: str = DEFAULT_WRONG_MODEL
    token_delay: float = 0.0
    owned_by: str | None = None

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

        return cls(
            model=model,
            host=get("NIMSIM_HOST") or defaults.host,
            port=integer("NIM_SERVER_PORT", defaults.port, minimum=0),
            max_model_len=integer("NIM_MAX_MODEL_LEN", defaults.max_model_len, minimum=1),
            load_delay=number("NIMSIM_LOAD_DELAY", defaults.load_delay),
            faults=Faults.parse(get("NIMSIM_FAULT") or ""),
            flap_period=number("NIMSIM_FLAP_PERIOD", defaults.flap_period, minimum=0.001),
            slow_seconds=number("NIMSIM_SLOW_SECONDS", defaults.slow_seconds),
            wrong_model_name=get("NIMSIM_WRONG_MODEL") or defaults.wrong_model_name,
            token_delay=number("NIMSIM_TOKEN_DELAY", defaults.token_delay),
            owned_by=get("NIMSIM_OWNED_BY"),
        )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {self.max_model_len}")
        if self.flap_period <= 0:
            raise ValueError(f"flap_period must be > 0, got {self.flap_period}")
        for name in ("load_delay", "slow_seconds", "token_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def served_model(self) -> str:
        """The id actually served, which differs from ``model`` under ``wrong-model``."""
        return self.wrong_model_name if self.faults.wrong_model else self.model

    @property
    def owner(self) -> str:
        return self.owned_by or self.served_model.split("/", 1)[0]


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
    faults = [flag for flag in _TAG_FLAGS if re.search(rf"{_WORD_LEFT}{flag}{_WORD_RIGHT}", tag)]
    crash = _TAG_CRASH.search(tag)
    if crash:
        faults.append(f"crash-after:{crash.group(1)}")
    overrides: dict[str, str] = {}
    if faults:
        overrides["NIMSIM_FAULT"] = ",".join(faults)
    load = _TAG_LOAD.search(tag)
    if load:
        overrides["NIMSIM_LOAD_DELAY"] = load.group(1)
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
