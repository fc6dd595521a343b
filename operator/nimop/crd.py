"""Generate the NimService CRD from the pydantic models.

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
from nimop.nimservice import models

Schema = dict[str, Any]

FILENAME = f"{names.CRD_NAME}.yaml"
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


def crd() -> Schema:
    spec_schema = schema_of(models.NimServiceSpec, "validation")
    status_schema = schema_of(models.NimServiceStatus, "serialization")
    status_schema.pop("required", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": names.CRD_NAME,
            "labels": {"app.kubernetes.io/name": "nimop", "app.kubernetes.io/part-of": "nimop"},
        },
        "spec": {
            "group": names.GROUP,
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": names.SHORT_NAMES,
                "categories": ["nim"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "NimService runs an NVIDIA NIM inference microservice: a GPU "
                                "Deployment and a Service, health-probed for the model it must "
                                "serve, rolled out safely with automatic rollback."
                            ),
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


def render() -> str:
    header = "# Generated by `make crds` from operator/nimop/models.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["print"]:
        sys.stdout.write(text)
        return 0
    if len(argv) < 2 or argv[0] not in ("write", "check"):
        print("usage: python -m nimop.crd write|check DIR... | print", file=sys.stderr)
        return 2
    stale = []
    for directory in map(Path, argv[1:]):
        target = directory / FILENAME
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
