"""`python -m nimlab`: run the local lab, or one of its parts.

serve      run a lab in the foreground until SIGTERM/SIGINT (what `up` starts in the background)
up         start a lab in the background unless one is running (make cluster-up)
down       stop it and wait for every process of it to exit (make cluster-down)
kubeconfig print the running lab's kubeconfig path
endpoint   print the loopback URL the lab's service proxy serves a Service on
runner     the pod runner itself (started by the lab)
node-addresses  loopback InternalIPs for Karpenter's nodes (started by a lab with Karpenter)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nimlab.karpenter import KarpenterConfig, KarpenterConfigError
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
    _add_karpenter(parser)


def _add_karpenter(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Karpenter (defaults from NIMLAB_KARPENTER* env variables)")
    group.add_argument(
        "--karpenter-gpu-pool",
        action="store_true",
        default=os.environ.get("NIMLAB_KARPENTER", "").strip().lower() in ("1", "true", "yes"),
        help="run real Karpenter with a GPU NodePool at zero nodes and a CPU NodePool, "
        "instead of the static GPU nodes",
    )
    group.add_argument(
        "--karpenter-gpu-limit",
        type=int,
        default=_env_int("NIMLAB_KARPENTER_GPU_LIMIT", 16),
        help="the GPU NodePool's limit on nvidia.com/gpu",
    )
    group.add_argument(
        "--karpenter-consolidate-after",
        default=os.environ.get("NIMLAB_KARPENTER_CONSOLIDATE_AFTER") or "30s",
        help="the NodePools' disruption.consolidateAfter (e.g. 30s, 5m, Never)",
    )
    group.add_argument(
        "--karpenter-node-delay",
        default=os.environ.get("NIMLAB_KARPENTER_NODE_DELAY") or "0s",
        help="how long a launched node takes to register (KWOKNodeClass nodeRegistrationDelay)",
    )


def _karpenter(args: argparse.Namespace) -> KarpenterConfig | None:
    if not args.karpenter_gpu_pool:
        return None
    return KarpenterConfig(
        gpu_limit=args.karpenter_gpu_limit,
        consolidate_after=args.karpenter_consolidate_after,
        registration_delay=args.karpenter_node_delay,
    )


def _topology(args: argparse.Namespace) -> Topology:
    return Topology.default(
        gpu_nodes=0 if args.karpenter_gpu_pool else args.gpu_nodes,  # Karpenter adds GPU nodes
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
        *(["--karpenter-gpu-pool"] if args.karpenter_gpu_pool else []),
        f"--karpenter-gpu-limit={args.karpenter_gpu_limit}",
        f"--karpenter-consolidate-after={args.karpenter_consolidate_after}",
        f"--karpenter-node-delay={args.karpenter_node_delay}",
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

    addresses = sub.add_parser("node-addresses", help="loopback IPs for Karpenter's nodes")
    addresses.add_argument("--kubeconfig", type=Path, required=True)

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
    if args.command == "node-addresses":
        from nimlab import nodeaddress

        return nodeaddress.main(args.kubeconfig)

    from nimlab import daemon

    if args.command == "demo":
        from nimlab import demo

        return demo.run(args.state_dir)
    if args.command in ("serve", "up"):
        try:
            karpenter = _karpenter(args)
        except KarpenterConfigError as err:
            print(f"nimlab: {err}", file=sys.stderr)
            return 2
    if args.command == "serve":
        runner_args = ["--time-scale", str(args.time_scale)]
        return daemon.serve(args.state_dir, _topology(args), runner_args, karpenter=karpenter)
    if args.command == "up":
        if karpenter is not None:  # a cold build takes minutes: do it here, not inside `serve`
            from nimlab.binaries import ensure_karpenter

            ensure_karpenter()
        return daemon.up(args.state_dir, _serve_args(args))
    if args.command == "down":
        return daemon.down(args.state_dir)
    if args.command == "kubeconfig":
        return daemon.kubeconfig(args.state_dir)
    return daemon.endpoint(args.state_dir, args.service, args.port)


if __name__ == "__main__":
    sys.exit(main())
