"""`kubectl nim check NAME`: run the NIM API reference's checks against a NimService.

kubectl runs a `kubectl-nim` executable found on PATH for `kubectl nim ...`, passing every
argument after `nim` unchanged and the environment (KUBECONFIG included) as is
(https://kubernetes.io/docs/tasks/extend-kubectl/kubectl-plugins/); so `kubectl nim check NAME`
is `kubectl-nim check NAME`, and the plugin takes kubectl's usual -n, --kubeconfig and
--context itself. `nimop check` reuses :func:`check_main` with the same flags.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

import httpx

from nimcheck.checks import CHECKS, CheckResult, Context, Runner, Settings
from nimcheck.cluster import (
    DEFAULT_PROBE_TIMEOUT,
    NimServiceInfo,
    fetch_nimservice,
    refusal,
    service_proxy_url,
)
from nimcheck.errors import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ApiServerError,
    FatalError,
)
from nimcheck.kubeconfig import ApiAccess, kubeconfig_location, load_access
from nimcheck.progress import Progress
from nimcheck.report import Target, document, header, line, passed, summary
from nimcheck.transport import NimHttp, NoAnswerError

EXIT_INTERRUPTED = 130  # what a shell reports for a command stopped by SIGINT
DEFAULT_REQUESTS = 20
DEFAULT_CONCURRENCY = 10
DEFAULT_TIMEOUT = 60.0

DESCRIPTION = """\
Run the NIM API reference's checks against a NimService: health, models, chat (system prompt,
multi-turn, temperature, top_p, penalties, stop, usage), streaming, error handling, latency,
throughput and metrics. One line per check; exit status 0 when every required check passed,
1 when one failed, 2 for bad usage, 3 when nothing could be checked (NimService missing or not
Ready, API server refused, endpoint unreachable).

By default requests go through the API server's service proxy with your kubeconfig's
credentials; --endpoint sends them to a URL instead (a LoadBalancer, a port-forward)."""


@dataclass(frozen=True)
class Streams:
    out: TextIO
    err: TextIO
    environ: Mapping[str, str]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def endpoint_url(text: str) -> str:
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as err:
        raise argparse.ArgumentTypeError(f"not a URL: {text!r} ({err})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(
            f"must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000, "
            f"got {text!r}"
        )
    return str(url.copy_with(query=None, fragment=None)).rstrip("/")


def checks_epilog() -> str:
    rows = [
        f"  {c.name:<22} {c.summary}" + ("" if c.required else " (informational)") for c in CHECKS
    ]
    return "checks, in order (docs/check.md has each one's request and rule):\n" + "\n".join(rows)


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="the NimService to check")
    parser.add_argument(
        "-n", "--namespace", help="namespace of the NimService (default: the context's)"
    )
    parser.add_argument(
        "--endpoint",
        type=endpoint_url,
        metavar="URL",
        help="send requests to URL instead of the API server's service proxy",
    )
    parser.add_argument("--model", help="model to request (default: the NimService's spec.model)")
    parser.add_argument(
        "--requests",
        type=positive_int,
        default=DEFAULT_REQUESTS,
        metavar="N",
        help=f"requests for the latency and throughput checks (default {DEFAULT_REQUESTS})",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="C",
        help=f"requests in flight in the throughput check (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"deadline of each request, whole answer included (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--max-p95",
        type=positive_seconds,
        metavar="SECONDS",
        help="fail the latency check when its p95 is over this",
    )
    parser.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="text (default) or json"
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current context)")


def build_parser(prog: str = "kubectl nim") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="NIM tools for NimServices.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="run the NIM API reference's checks against a NimService",
        description=DESCRIPTION,
        epilog=checks_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_check_arguments(check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`kubectl-nim COMMAND ...` (the console script kubectl finds as the `nim` plugin)."""
    args = build_parser().parse_args(argv)
    return run(args)


def check_main(argv: Sequence[str] | None = None, prog: str = "nimop check") -> int:
    """The arguments after `check`, for embedding as another program's subcommand."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=checks_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_check_arguments(parser)
    return run(parser.parse_args(argv))


def run(
    args: argparse.Namespace,
    *,
    streams: Streams | None = None,
    api_transport: httpx.AsyncBaseTransport | None = None,
    access: ApiAccess | None = None,
) -> int:
    """Run the checks for parsed arguments; `api_transport` (everything sent to the API server)
    and `access` let tests stand in for the API server and the kubeconfig."""
    io = streams or Streams(sys.stdout, sys.stderr, os.environ)
    if args.name is None and not (args.endpoint and args.model):
        io.err.write(
            "error: give a NimService NAME, or both --endpoint and --model to check a NIM "
            "without a NimService\n"
        )
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args, io, api_transport, access))
    except KeyboardInterrupt:
        io.err.write("\ninterrupted\n")
        return EXIT_INTERRUPTED


async def _run(
    args: argparse.Namespace,
    io: Streams,
    transport: httpx.AsyncBaseTransport | None,
    access: ApiAccess | None,
) -> int:
    json_output = args.output == "json"
    target: Target | None = None
    ctx: Context | None = None
    runner: Runner | None = None
    try:
        if args.name is not None and access is None:
            location = kubeconfig_location(args.kubeconfig, io.environ)
            access = load_access(location, args.context)
        nim = None
        if args.name is not None:
            assert access is not None
            nim = await _nimservice(args, access, transport)
        target = _target(args, access, nim)
        http = _client(args, target, access, transport)
        ctx = Context(
            http=http,
            model=target.model,
            settings=Settings(
                requests=args.requests,
                concurrency=args.concurrency,
                readiness_timeout=nim.readiness_timeout if nim else DEFAULT_PROBE_TIMEOUT,
                liveness_timeout=nim.liveness_timeout if nim else DEFAULT_PROBE_TIMEOUT,
                max_p95=args.max_p95,
            ),
            progress=Progress(io.err, tty=io.err.isatty()),
        )
        color = io.out.isatty() and "NO_COLOR" not in io.environ
        shown: Target | None = target

        def report(result: CheckResult) -> None:
            nonlocal shown
            if json_output:
                return
            if shown is not None:  # the header waits until the endpoint has answered
                io.out.write("\n".join(header(shown)) + "\n")
                shown = None
            io.out.write(line(result, color) + "\n")
            io.out.flush()

        runner = Runner(ctx)
        try:
            await runner.run(CHECKS, report)
        finally:
            await http.aclose()
    except (ApiServerError, NoAnswerError, FatalError) as err:
        done = runner.results if runner else []
        return _fatal(_as_fatal(err, access, target), io, json_output, target, done, ctx)

    results = runner.results
    ok = passed(results)
    if json_output:
        io.out.write(json.dumps(document(target, results, ctx), indent=2) + "\n")
    else:
        io.out.write(summary(results) + "\n")
    return EXIT_OK if ok else EXIT_CHECK_FAILED


async def _nimservice(
    args: argparse.Namespace, access: ApiAccess, transport: httpx.AsyncBaseTransport | None
) -> NimServiceInfo:
    namespace = args.namespace or access.namespace
    async with httpx.AsyncClient(
        headers=dict(access.headers),
        verify=access.verify,
        timeout=httpx.Timeout(min(args.timeout, 30.0)),
        trust_env=False,
        transport=transport,
    ) as client:
        nim = await fetch_nimservice(client, access, namespace, args.name)
    problem = nim.not_ready()
    if problem:
        raise FatalError(problem)
    if not nim.model and not args.model:
        raise FatalError(f"NimService {namespace}/{args.name} has no spec.model; give --model")
    return nim


def _target(
    args: argparse.Namespace, access: ApiAccess | None, nim: NimServiceInfo | None
) -> Target:
    model = args.model or (nim.model if nim else "")
    if args.endpoint:
        return Target(model, args.endpoint, "endpoint", nim)
    assert access is not None
    assert nim is not None
    url = service_proxy_url(access.server, nim.namespace, nim.service, nim.port)
    return Target(model, url, "service-proxy", nim)


def _client(
    args: argparse.Namespace,
    target: Target,
    access: ApiAccess | None,
    transport: httpx.AsyncBaseTransport | None,
) -> NimHttp:
    proxied = target.via == "service-proxy"
    return NimHttp(
        target.endpoint,
        timeout=args.timeout,
        connections=max(args.concurrency, 4),
        headers=access.headers if proxied and access else None,
        verify=access.verify if proxied and access else True,
        via_proxy=proxied,
        transport=transport if proxied else None,
    )


def _as_fatal(
    err: ApiServerError | NoAnswerError | FatalError,
    access: ApiAccess | None,
    target: Target | None,
) -> FatalError:
    if isinstance(err, ApiServerError):
        assert access is not None  # only the API server path raises it
        return refusal(err, access)
    if isinstance(err, NoAnswerError):
        # Only the first request's failure gets here: nothing answered at all.
        where = target.endpoint if target else "the endpoint"
        return FatalError(f"cannot check {where}: {err.message}")
    return err


def _fatal(
    err: FatalError,
    io: Streams,
    json_output: bool,
    target: Target | None,
    results: list[CheckResult],
    ctx: Context | None,
) -> int:
    io.err.write(f"error: {err.message}\n")
    if json_output:
        io.out.write(json.dumps(document(target, results, ctx, error=err.message), indent=2) + "\n")
    return err.exit_code
