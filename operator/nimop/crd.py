"""Generate the NimService and NimCache CRDs from the pydantic models.

The API server accepts only structural schemas: every node typed, no $ref, no additionalProperties
beside properties, defaults only where they are meant to be persisted. pydantic's JSON Schema is
close; `structural()` closes the gap. `python -m nimop.crd write DIR...` writes the CRD, and
`check DIR...` fails when a directory's copy differs from what the models generate (CI runs it).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from nimop import names
from nimop.nimcache import models as cache_models
from nimop.nimservice import models

Schema = dict[str, Any]

FILENAME = f"{names.CRD_NAME}.yaml"
NIMCACHE_FILENAME = f"{cache_models.CRD_NAME}.yaml"
KEEP_DEFAULT = "x-nimop-keep-default"
_DROP = {"title", "additionalProperties", "$defs", KEEP_DEFAULT}


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _resolve(defs[node["$ref"].split("/")[-1]], defs)
        siblings = {k: _resolve(v, defs) for k, v in node.items() if k != "$ref"}
        return {**target, **siblings}
    return {k: _resolve(v, defs) for k, v in node.items()}


def _is_null(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "null"


def reflow(text: str) -> str:
    """Docstrings wrap at source width and kubectl explain wraps by itself: keep paragraphs only."""
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


_FIRST = ("type", "description")


def _ordered(schema: Schema) -> Schema:
    return {
        **{k: schema[k] for k in _FIRST if k in schema},
        **{k: v for k, v in schema.items() if k not in _FIRST},
    }


def structural(node: Any) -> Any:
    """Turn resolved pydantic JSON Schema into a Kubernetes structural schema."""
    if isinstance(node, list):
        return [structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    keep_default = bool(node.get(KEEP_DEFAULT))
    any_of = node.get("anyOf")
    if any_of and any(_is_null(x) for x in any_of):
        rest = [x for x in any_of if not _is_null(x)]
        node.pop("anyOf")
        node["nullable"] = True
        if len(rest) == 1:
            merged = {**rest[0], **{k: v for k, v in node.items() if k != "default"}}
            node = merged
        else:
            node["anyOf"] = rest
    if "const" in node:
        node["enum"] = [node.pop("const")]
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and not keep_default):
            continue
        if key == "properties":
            out[key] = {name: structural(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = structural(value)
        elif key == "description":
            out[key] = reflow(value)
        else:
            out[key] = value
    if node.get("type") == "object" and "properties" not in node:
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = structural(extra)
    return _ordered(out)


def schema_of(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode=mode)
    result: Schema = structural(_resolve(raw, raw.get("$defs", {})))
    return result


def printer_columns() -> list[Schema]:
    ready = '.status.conditions[?(@.type=="Ready")]'
    return [
        {"name": "Ready", "type": "string", "jsonPath": f"{ready}.status"},
        {"name": "Reason", "type": "string", "jsonPath": f"{ready}.reason"},
        {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
        {
            "name": "Replicas",
            "type": "string",
            "jsonPath": ".status.replicasSummary",
            "description": "Replicas serving spec.model / desired",
        },
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Image", "type": "string", "jsonPath": ".spec.image.tag", "priority": 1},
        {
            "name": "Rollout",
            "type": "string",
            "jsonPath": ".status.rollout.phase",
            "priority": 1,
        },
    ]


def nimcache_printer_columns() -> list[Schema]:
    ready = '.status.conditions[?(@.type=="Ready")]'
    return [
        {"name": "Ready", "type": "string", "jsonPath": f"{ready}.status"},
        {"name": "Reason", "type": "string", "jsonPath": f"{ready}.reason"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {
            "name": "Profiles",
            "type": "integer",
            "jsonPath": ".status.profileCount",
            "description": "Model profiles in the cache",
        },
        {"name": "Size", "type": "string", "jsonPath": ".status.size"},
        {"name": "PVC", "type": "string", "jsonPath": ".status.pvc"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Job", "type": "string", "jsonPath": ".status.job", "priority": 1},
    ]


def _definition(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    description: str,
    columns: list[Schema],
    subresources: Schema,
) -> Schema:
    """One CustomResourceDefinition of the nimop.dev group, its schema from the models."""
    spec_schema = schema_of(spec_model, "validation")
    status_schema = schema_of(status_model, "serialization")
    status_schema.pop("required", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{names.GROUP}",
            "labels": {"app.kubernetes.io/name": "nimop", "app.kubernetes.io/part-of": "nimop"},
        },
        "spec": {
            "group": names.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": ["nim"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd() -> Schema:
    """The NimService CRD."""
    return _definition(
        kind=names.KIND,
        plural=names.PLURAL,
        singular=names.SINGULAR,
        short_names=names.SHORT_NAMES,
        spec_model=models.NimServiceSpec,
        status_model=models.NimServiceStatus,
        description=(
            "NimService runs an NVIDIA NIM inference microservice: a GPU Deployment and a "
            "Service, health-probed for the model it must serve, rolled out safely with "
            "automatic rollback."
        ),
        columns=printer_columns(),
        subresources={
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
    )


def nimcache_crd() -> Schema:
    """The NimCache CRD."""
    return _definition(
        kind=cache_models.KIND,
        plural=cache_models.PLURAL,
        singular=cache_models.SINGULAR,
        short_names=cache_models.SHORT_NAMES,
        spec_model=cache_models.NimCacheSpec,
        status_model=cache_models.NimCacheStatus,
        description=(
            "NimCache downloads an NVIDIA NIM's model profiles once, with the NIM image's own "
            "download-to-cache, into a PersistentVolumeClaim that NimServices mount instead of "
            "downloading the model in every replica. Ready only once the download Job reported "
            "what it cached."
        ),
        columns=nimcache_printer_columns(),
        subresources={"status": {}},
    )


HEADER = "# Generated by `make crds` from the pydantic models in operator/nimop. Do not edit.\n"


def render() -> str:
    """The NimService CRD as written to crds/."""
    header = "# Generated by `make crds` from operator/nimop/models.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def render_nimcache() -> str:
    """The NimCache CRD as written to crds/."""
    return HEADER + yaml.safe_dump(nimcache_crd(), sort_keys=False, width=100)


def documents() -> dict[str, str]:
    """Every CRD file `make crds` writes, by file name."""
    return {FILENAME: render(), NIMCACHE_FILENAME: render_nimcache()}


def main(argv: list[str]) -> int:
    if argv == ["print"]:
        sys.stdout.write(render())
        return 0
    if argv == ["print-nimcache"]:
        sys.stdout.write(render_nimcache())
        return 0
    if len(argv) < 2 or argv[0] not in ("write", "check"):
        print(
            "usage: python -m nimop.crd write|check DIR... | print | print-nimcache",
            file=sys.stderr,
        )
        return 2
    docs = documents()
    stale = []
    for directory in map(Path, argv[1:]):
        for filename, text in docs.items():
            target = directory / filename
            if argv[0] == "write":
                directory.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            elif not target.is_file() or target.read_text() != text:
                stale.append(str(target))
    if stale:
        print(f"CRD out of date (run `make crds`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
