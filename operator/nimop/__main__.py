"""`python -m nimop`: run the operator, render a NimService offline, print the CRD, or check a
NimService's NIM API (`nimop check`, the same command as `kubectl nim check`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import yaml

OPTIONAL_EXTRAS = ("kubernetes", "kubernetes_asyncio", "pykube", "rich", "pygments")


def _import_lean() -> None:
    """Import kopf and httpx as if the optional libraries they look for were not installed,
    and give kopf its plain handler registry.

    kopf imports each Kubernetes client library it finds, to recognise the library's model
    objects in kopf.adopt() and its kin, which nimop never calls; and its default registry
    adds a login through it, which nimop does not need (it has its own). httpx imports its
    command line (rich, pygments) when they are installed. The official client is installed
    next to the operator for the lab, rich for development, and importing them would cost
    13 MiB of resident memory for good (75 MiB after importing the operator, 62 without).
    A None in sys.modules makes an import fail as if the package were absent; the entries go
    again once both are in, so anything else can still import them.
    """
    hidden = [name for name in OPTIONAL_EXTRAS if name not in sys.modules]
    if "kopf" in sys.modules or len(hidden) < len(OPTIONAL_EXTRAS):
        return
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import httpx  # noqa: F401
        import kopf

        kopf.set_default_registry(kopf.OperatorRegistry())
    finally:
        for name in hidden:
            del sys.modules[name]


def _run(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # read by kopf's login and the API client
    _import_lean()
    import kopf

    from nimop import handlers  # noqa: F401  (registers the handlers)
    from nimop.runtime.informer import KOPF_WATCH_LOGGER, QuietWatchRetries
    from nimop.settings import Settings

    settings = Settings.from_env()
    namespaces = tuple(args.namespace) or settings.namespaces
    kopf.configure(
        verbose=settings.log_level.upper() == "DEBUG",
        quiet=settings.log_level.upper() in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON if settings.log_json else kopf.LogFormat.PLAIN,
    )
    if settings.log_level.upper() != "DEBUG":
        # kopf reports every watch event it dispatches; the operator logs what matters itself.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger(KOPF_WATCH_LOGGER).addFilter(QuietWatchRetries())
    logging.getLogger().setLevel(settings.log_level.upper())
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,  # replicas coordinate through the Lease (leader.py), not kopf peering
    )
    return 0


def _render(args: argparse.Namespace) -> int:
    """Offline rendering, for reviewing a spec or an admin's custom templates."""
    from nimop import names
    from nimop.core import render
    from nimop.core.meta import object_ref
    from nimop.nimservice import models, params

    docs = list(yaml.safe_load_all(Path(args.file).read_text() if args.file != "-" else sys.stdin))
    out = []
    for doc in docs:
        if not doc or doc.get("kind") != "NimService":
            continue
        meta = {
            "namespace": "default",
            "uid": "00000000-0000-0000-0000-000000000000",
            **doc["metadata"],
        }
        spec = models.NimServiceSpec.model_validate(doc["spec"])
        templates = Path(args.templates) if args.templates else render.default_templates_dir()
        nim_cache = spec.cache.nim_cache if spec.cache else None
        p = params.build(
            spec,
            object_ref({**doc, "metadata": meta}),
            params.SURGE,
            template_fingerprint=render.fingerprint(templates, params.RESOURCE),
            # Offline, a NimCache's claim is the one it would create.
            cache=params.CacheMount(names.nimcache_claim_name(nim_cache.name))
            if nim_cache
            else None,
        )
        if args.params:
            out.append(render.describe(p))
        else:
            out.extend(render.render(p, params.RESOURCE, templates))
    sys.stdout.write(yaml.safe_dump_all(json.loads(json.dumps(out, default=str)), sort_keys=False))
    return 0


def _crd(_: argparse.Namespace) -> int:
    from nimop import crd

    sys.stdout.write(crd.render())
    return 0


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["check"]:
        # `nimop check` is `kubectl nim check`: one implementation, in its own package.
        from nimcheck import check_main

        return check_main(args_in[1:], prog="nimop check")
    parser = argparse.ArgumentParser(prog="nimop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator (settings: NIMOP_* environment variables)")
    run.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch this namespace (repeatable); default: NIMOP_NAMESPACES or all",
    )
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, or KUBECONFIG)")
    run.set_defaults(func=_run)
    rend = sub.add_parser("render", help="print the objects a NimService renders to")
    rend.add_argument("-f", "--file", required=True, help="NimService YAML, or - for stdin")
    rend.add_argument("--templates", help="template directory (default: the shipped manifests)")
    rend.add_argument("--params", action="store_true", help="print the template parameters instead")
    rend.set_defaults(func=_render)
    sub.add_parser("crd", help="print the CustomResourceDefinition").set_defaults(func=_crd)
    sub.add_parser("check", help="run the NIM API checks against a NimService (kubectl nim check)")
    args = parser.parse_args(args_in)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
