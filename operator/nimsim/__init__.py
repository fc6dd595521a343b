"""A simulated NVIDIA NIM for LLMs: its start-up, cache utilities and HTTP API, without a GPU.

The operator's tests and local lab need many NIM endpoints that download, load,
fail and answer on cue; this package provides them, as a library and as the
``nimsim`` command. Behaviour and sources: ``docs/simulator.md``.

The library API (stable; the lab's pod runner codes against it)
---------------------------------------------------------------

``SimConfig.from_env(env: Mapping[str, str]) -> SimConfig``
    Settings from a container's environment (:mod:`nimsim.config` lists them).
    ``NIMSIM_PATH_MAP`` is a JSON object of container path -> host path;
    ``SimConfig.host_path(container_path: str) -> pathlib.Path`` resolves a
    path through the longest matching prefix (identity when nothing matches).
    Every path the simulator reads or writes (``NIM_CACHE_PATH``,
    ``NIM_PEFT_SOURCE``, a model store, ``/dev/termination-log``) goes through it.

``Simulator(config, *, output=None, bind_seconds=10.0, on_transition=None)``
    One NIM process. ``await start()`` begins its life and returns at once
    (it never waits for a download; during one nothing listens).
    ``phase`` is ``"downloading" | "loading" | "ready" | "exited"``.
    ``listening: asyncio.Event`` is set once bound, and ``url`` is valid from
    then on. ``exited: asyncio.Event`` with ``exit_code: int | None`` and
    ``exit_message: str | None`` are set when the process ends on its own: a
    ``crash-after`` fault, a failed download, or an address it could not bind
    within ``bind_seconds`` (a deleted pod's simulator on a reused IP may still
    be closing). ``await stop()`` is idempotent and leaves ``exited`` unset.
    ``output(line)`` receives every container log line (default: logging).
    ``crashed`` is a deprecated alias of ``exited``.
    ``on_transition(Transition)``, when given, is called at each change:
    ``Transition(name, monotonic, wall)`` with ``name`` one of ``"started"``,
    ``"downloading"``, ``"listening"``, ``"ready"``, ``"not-ready"``,
    ``"exited"`` (on its own or by ``stop()``, reported once), ``monotonic``
    the ``time.monotonic()`` and ``wall`` the ``time.time()`` at which it took
    effect. ``ready``/``not-ready`` are event-loop timers scheduled exactly
    when ``/v1/health/ready`` starts answering 200 or 503, so a host can
    derive probe outcomes from them without polling; a timer exists only
    while a change is still due (loading, or a flapping model).

``nimsim.utilities.ENTRYPOINTS: frozenset[str]``
    NIM utility command names: ``download-to-cache``, ``list-model-profiles``,
    ``create-model-store`` and their ``nim_*`` names.
``async nimsim.utilities.run(argv, config, output) -> int``
    ``argv: Sequence[str]``, ``config: SimConfig``, ``output: Callable[[str], None]``.
    Runs one utility as a container's main process would (``argv[0]`` is the
    command name), sends each log line to ``output`` and returns the exit code.

``make_app(config)`` builds the aiohttp application alone (for aiohttp's test
utilities); ``fault_from_image_tag`` and ``model_from_image`` are the image
reference conventions.
"""

from nimsim.app import make_app
from nimsim.config import Faults, SimConfig, fault_from_image_tag, model_from_image
from nimsim.server import Phase, Simulator, Transition

__all__ = [
    "Faults",
    "Phase",
    "SimConfig",
    "Simulator",
    "Transition",
    "fault_from_image_tag",
    "make_app",
    "model_from_image",
]
