"""Command line entry point: serve one simulated NIM, or run one of NIM's utilities.

``nimsim [flags]`` (or ``nimsim serve [flags]``) runs the server until
signalled or until the simulated process ends on its own; ``nimsim
download-to-cache -p ID`` (any name in :data:`nimsim.utilities.ENTRYPOINTS`)
runs that utility with its own flags, as the NIM image's entrypoint would.

Flags override the environment variable named in their help, so a pod runner
can pass a Deployment's env block unchanged and adjust single settings.
Exit status: 0 after SIGTERM/SIGINT, the simulated process's status when it
ends on its own (1 after a ``crash-after`` fault, a failed download or an
address that cannot be bound), 2 for invalid settings; a utility's own status.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from nimsim import utilities
from nimsim.config import SimConfig
from nimsim.server import Simulator

log = logging.getLogger("nimsim")

# (flag, environment variable it overrides, help)
_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("--host", "NIMSIM_HOST", "address to listen on (default 127.0.0.1)"),
    ("--port", "NIM_SERVER_PORT", "port to listen on, 0 for any free port (default 8000)"),
    ("--model", "NIM_SERVED_MODEL_NAME", "model id to serve"),
    ("--image", "NIMSIM_IMAGE", "image reference to derive the model id and tag faults from"),
    ("--max-model-len", "NIM_MAX_MODEL_LEN", "context length in tokens (default: the model's)"),
    ("--cache-path", "NIM_CACHE_PATH", "model cache directory (default: none modelled)"),
    ("--profile", "NIM_MODEL_PROFILE", "model profile id or name to serve"),
    ("--peft-source", "NIM_PEFT_SOURCE", "directory of LoRA adapters, one per sub-directory"),
    ("--load-delay", "NIMSIM_LOAD_DELAY", "seconds until the model is loaded (default 2)"),
    ("--download-delay", "NIMSIM_DOWNLOAD_DELAY", "seconds a profile download takes (default 1)"),
    (
        "--download-fault",
        "NIMSIM_DOWNLOAD_FAULT",
        "auth-fail, network-fail, disk-full, slow-download",
    ),
    ("--flap-period", "NIMSIM_FLAP_PERIOD", "seconds per readiness flip under 'flapping'"),
    ("--slow-seconds", "NIMSIM_SLOW_SECONDS", "delay added to every response under 'slow'"),
    ("--wrong-model", "NIMSIM_WRONG_MODEL", "model id served under 'wrong-model'"),
    ("--token-delay", "NIMSIM_TOKEN_DELAY", "seconds spent per generated token (default 0)"),
    ("--owned-by", "NIMSIM_OWNED_BY", "owned_by of the model object"),
)


def build_parser() -> argparse.ArgumentParser:
    utilities_list = ", ".join(sorted(utilities.ENTRYPOINTS))
    parser = argparse.ArgumentParser(
        prog="nimsim",
        description="Simulated NVIDIA NIM server speaking the OpenAI-compatible NIM API. "
        f"NIM's utilities run as subcommands: nimsim UTILITY [ARGS] ({utilities_list}); "
        "see nimsim UTILITY -h.",
    )
    for flag, env_name, help_text in _FLAGS:
        parser.add_argument(flag, metavar="VALUE", help=f"{help_text} [env {env_name}]")
    parser.add_argument(
        "--fault",
        action="append",
        metavar="MODE",
        help="fault mode, repeatable or comma-separated: never-ready, flapping, slow, "
        "wrong-model, crash-after:N [env NIMSIM_FAULT]",
    )
    return parser


def config_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> SimConfig:
    """Overlay parsed flags on the environment and build the config (ValueError if invalid)."""
    env = dict(os.environ if environ is None else environ)
    for flag, env_name, _ in _FLAGS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            env[env_name] = value
    if args.fault is not None:
        env["NIMSIM_FAULT"] = ",".join(args.fault)
    return SimConfig.from_env(env)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in utilities.ENTRYPOINTS:
        return _utility(arguments)
    if arguments and arguments[0] == "serve":
        arguments = arguments[1:]
    parser = build_parser()
    args = parser.parse_args(arguments)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    _setup_logging()
    return asyncio.run(_serve(config))


def _setup_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _utility(arguments: list[str]) -> int:
    try:
        config = SimConfig.from_env(os.environ)
    except ValueError as exc:
        print(f"{arguments[0]}: {exc}", file=sys.stderr)
        return 2

    def output(line: str) -> None:
        print(line, flush=True)

    return asyncio.run(utilities.run(arguments, config, output))


async def _serve(config: SimConfig) -> int:
    simulator = Simulator(config)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    await simulator.start()

    async def announce() -> None:
        await simulator.listening.wait()
        log.info(
            "listening on %s serving %s (load delay %gs, faults: %s)",
            simulator.url,
            config.served_model,
            config.load_delay,
            str(config.faults) or "none",
        )

    announcer = asyncio.create_task(announce())
    waits = [
        asyncio.create_task(stop_requested.wait()),
        asyncio.create_task(simulator.exited.wait()),
    ]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in [*waits, announcer]:
        task.cancel()
    await simulator.stop()
    if simulator.exit_code is not None:
        log.error("exiting with status %d: %s", simulator.exit_code, simulator.exit_message)
        return simulator.exit_code
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
