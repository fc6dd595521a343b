"""Command line entry point: run one simulated NIM until signalled or crashed.

Flags override the environment variable named in their help, so a pod runner
can pass a Deployment's env block unchanged and adjust single settings.
Exit status: 0 after SIGTERM/SIGINT, 1 after a ``crash-after`` fault or when
the address cannot be bound, 2 for invalid settings.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from nimsim.config import SimConfig
from nimsim.server import Simulator

log = logging.getLogger("nimsim")

# (flag, environment variable it overrides, help)
_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("--host", "NIMSIM_HOST", "address to listen on (default 127.0.0.1)"),
    ("--port", "NIM_SERVER_PORT", "port to listen on, 0 for any free port (default 8000)"),
    ("--model", "NIM_SERVED_MODEL_NAME", "model id to serve"),
    ("--image", "NIMSIM_IMAGE", "image reference to derive the model id and tag faults from"),
    ("--max-model-len", "NIM_MAX_MODEL_LEN", "context length in tokens (default 8192)"),
    ("--load-delay", "NIMSIM_LOAD_DELAY", "seconds until the model is loaded (default 2)"),
    ("--flap-period", "NIMSIM_FLAP_PERIOD", "seconds per readiness flip under 'flapping'"),
    ("--slow-seconds", "NIMSIM_SLOW_SECONDS", "delay added to every response under 'slow'"),
    ("--wrong-model", "NIMSIM_WRONG_MODEL", "model id served under 'wrong-model'"),
    ("--token-delay", "NIMSIM_TOKEN_DELAY", "seconds spent per generated token (default 0)"),
    ("--owned-by", "NIMSIM_OWNED_BY", "owned_by of the model object"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nimsim",
        description="Simulated NVIDIA NIM server speaking the OpenAI-compatible NIM API.",
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(_serve(config))


async def _serve(config: SimConfig) -> int:
    simulator = Simulator(config)
    try:
        await simulator.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
        return 1
    log.info(
        "listening on %s serving %s (load delay %gs, faults: %s)",
        simulator.url,
        config.served_model,
        config.load_delay,
        str(config.faults) or "none",
    )

    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)

    waits = [
        asyncio.create_task(stop_requested.wait()),
        asyncio.create_task(simulator.crashed.wait()),
    ]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    await simulator.stop()
    if simulator.crashed.is_set():
        log.error("exiting with status 1 after simulated crash")
        return 1
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
