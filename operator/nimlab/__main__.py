"""`python -m nimlab`: run the local lab, or one of its parts.

serve      run a lab in the foreground until SIGTERM/SIGINT (what `up` starts in the background)
up         start a lab in the background unless one is running (make cluster-up)
down       stop it and wait for every process of it to exit (make cluster-down)
kubeconfig print the running lab's kubeconfig path
endpoint   print the loopback URL the lab's service proxy serves a Service on
runner     the pod runner itself (started by the lab)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nimlab.nodes import Topology


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _add_topology(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("topology (defaults from NIMLAB_* env variables)")
    group.add_argument("--gpu-nodes", type=int, default=_env_int("NIMLAB_GPU_NODES", 2))
    group.add_argument("--gpus-per-node", type=int, default=_env_int("NIMLAB_GPUS_PER_NODE", 8))
    group.add_argument(
        "--gpu-product",
        default=os.environ.get("NIMLAB_GPU_PRODUCT") or "NVIDIA-H100-80GB-HBM3",
    )
    group.add_argument("--cpu-nodes", type=int, default=_env_int("NIMLAB_CPU_NODES", 1))
    group.add_argument(
        "--time-scale",
        type=float,
        default=float(os.environ.get("NIMLAB_TIME_SCALE") or 1.0),
        help="multiply kubelet timings (probe periods, back-offs) by this",
    )


def _topology(args: argparse.Namespace) -> Topology:
    return Topology.default(
        gpu_nodes=args.gpu_nodes,
        gpus_per_node=args.gpus_per_node,
        product=args.gpu_product,
        cpu_nodes=args.cpu_nodes,
    )


def _serve_args(args: argparse.Namespace) -> list[str]:
    return [
        f"--gpu-nodes={args.gpu_nodes}",
        f"--gpus-per-node={args.gpus_per_node}",
        f"--gpu-product={args.gpu_product}",
        f"--cpu-nodes={args.cpu_nodes}",
        f"--time-scale={args.time_scale}",
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nimlab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    runner = sub.add_parser("runner", help="the pod runner (kubelet, kube-proxy, provisioner)")
    runner.add_argument("--kubeconfig", type=Path, required=True)
    runner.add_argument("--control-file", type=Path, required=True)
    runner.add_argument("--time-scale", type=float, default=1.0)
    runner.add_argument("--volume-dir", type=Path, default=None)

    for name, text in (
        ("serve", "run a lab in the foreground"),
        ("up", "start a lab in the background (idempotent)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--state-dir", type=Path, required=True)
        _add_topology(cmd)

    for name, text in (
        ("down", "stop the background lab"),
        ("kubeconfig", "print the running lab's kubeconfig path"),
    ):
        sub.add_parser(name, help=text).add_argument("--state-dir", type=Path, required=True)

    demo = sub.add_parser("demo", help="lab + operator + the llama example, left running")
    demo.add_argument("--state-dir", type=Path, required=True)

    endpoint = sub.add_parser("endpoint", help="print a Service's loopback URL")
    endpoint.add_argument("service", metavar="NAMESPACE/SERVICE")
    endpoint.add_argument("--port", default=None, help="port number or name (default: first)")
    endpoint.add_argument("--state-dir", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "runner":
        from nimlab import runner

        return runner.main(args.kubeconfig, args.control_file, args.time_scale, args.volume_dir)

    from nimlab import daemon

    if args.command == "demo":
        from nimlab import demo

        return demo.run(args.state_dir)
    if args.command == "serve":
        return daemon.serve(args.state_dir, _topology(args), ["--time-scale", str(args.time_scale)])
    if args.command == "up":
        return daemon.up(args.state_dir, _serve_args(args))
    if args.command == "down":
        return daemon.down(args.state_dir)
    if args.command == "kubeconfig":
        return daemon.kubeconfig(args.state_dir)
    return daemon.endpoint(args.state_dir, args.service, args.port)


if __name__ == "__main__":
    sys.exit(main())
