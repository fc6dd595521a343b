#!/usr/bin/env python3
"""Write every copy of the NimService and NimCache health checks from gitops/argocd/health.lua.

    python3 gitops/argocd/generate.py          rewrite the copies
    python3 gitops/argocd/generate.py --check  exit 1 if any copy differs from health.lua

health.lua is the only file to edit. Both kinds report Ready, Reconciling and Stalled the same
way (kstatus), so one script serves both, registered once per kind. The copies:
argocd-cm-patch.yaml (a patch for the argocd-cm ConfigMap), argo-cd-values.yaml (values for the
argo-cd Helm chart) and resource_customizations/nimop.dev/<Kind>/health.lua (Argo CD's layout
for built-in checks). tests/unit/test_gitops_health.py runs --check. Needs only the standard
library.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "health.lua"
KINDS = ("NimService", "NimCache")
KEYS = tuple(f"resource.customizations.health.nimop.dev_{kind}" for kind in KINDS)
UPSTREAMS = tuple(HERE / "resource_customizations" / "nimop.dev" / k / "health.lua" for k in KINDS)


def _block(script: str, indent: int) -> str:
    """The script as a YAML literal block scalar (`|`), indented by `indent` spaces."""
    pad = " " * indent
    return "".join(pad + line if line.strip() else "\n" for line in script.splitlines(True))


def render(script: str) -> dict[Path, str]:
    if not script.endswith("\n") or script.endswith("\n\n"):
        raise ValueError("health.lua must end with exactly one newline")
    if any(line != line.rstrip() for line in script.splitlines()):
        raise ValueError("health.lua has trailing whitespace, which YAML block scalars mangle")
    header = (
        "# Generated from gitops/argocd/health.lua by gitops/argocd/generate.py: do not edit.\n"
    )
    patch = (
        header
        + "# Argo CD health for NimService and NimCache. Merge into the argocd-cm ConfigMap, e.g.\n"
        + "#   kubectl -n argocd patch configmap argocd-cm --patch-file argocd-cm-patch.yaml\n"
        + "# or list it under `patches:` in the kustomization that installs Argo CD.\n"
        + "apiVersion: v1\n"
        + "kind: ConfigMap\n"
        + "metadata:\n"
        + "  name: argocd-cm\n"
        + "  namespace: argocd\n"
        + "data:\n"
        + "".join(f"  {key}: |\n" + _block(script, 4) for key in KEYS)
    )
    values = (
        header
        + "# Argo CD health for NimService and NimCache, as values of the argo-cd Helm chart\n"
        + "# (argo-helm):\n"
        + "#   helm upgrade --install argocd argo/argo-cd -n argocd -f argo-cd-values.yaml\n"
        + "configs:\n"
        + "  cm:\n"
        + "".join(f"    {key}: |\n" + _block(script, 6) for key in KEYS)
    )
    return {
        HERE / "argocd-cm-patch.yaml": patch,
        HERE / "argo-cd-values.yaml": values,
        **dict.fromkeys(UPSTREAMS, script),
    }


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print(__doc__, file=sys.stderr)
        return 2
    stale = []
    for path, content in render(SOURCE.read_text()).items():
        if path.exists() and path.read_text() == content:
            continue
        stale.append(path.relative_to(HERE))
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    if check and stale:
        names = ", ".join(str(p) for p in stale)
        print(f"out of date with health.lua: {names}; run {sys.argv[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
