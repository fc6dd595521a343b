"""Render child objects from Jinja templates: params in, plain dicts out, no I/O after loading.

Templates are YAML with holes. A hole filled by raw text could inject fields (a newline and an
indent are enough), so every value must go through the `y` filter, which emits one line of
YAML flow syntax with every string double-quoted and escaped; `finalize` rejects any hole that
skipped the filter, so a template that forgets it fails loudly instead of rendering unsafely.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

from nimop import names
from nimop.params import Params

Obj = dict[str, Any]
TEMPLATE_SUFFIX = ".yaml.j2"

_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _QuotedDumper(_BaseDumper):  # type: ignore[misc,valid-type]
    pass


def _quoted_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')


def _undefined(dumper: yaml.SafeDumper, value: jinja2.Undefined) -> yaml.ScalarNode:
    # str() of a StrictUndefined raises UndefinedError naming the missing parameter, which is
    # the message a template author needs (rather than "cannot represent an object").
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value))


_QuotedDumper.add_representer(str, _quoted_str)
_QuotedDumper.add_multi_representer(jinja2.Undefined, _undefined)


class YamlSafe(str):
    """Text the `y` filter produced; the only thing a template hole may emit."""


def to_yaml(value: Any) -> YamlSafe:
    text = yaml.dump(
        value,
        Dumper=_QuotedDumper,
        default_flow_style=True,
        width=2**30,
        allow_unicode=False,
        sort_keys=False,
    )
    return YamlSafe(text.removesuffix("\n...\n").rstrip("\n"))


class UnsafeTemplateError(jinja2.TemplateError):
    pass


def _finalize(value: Any) -> Any:
    if isinstance(value, YamlSafe):
        return value
    raise UnsafeTemplateError(f"a template emitted {value!r} without the `| y` filter")


def default_templates_dir() -> Path:
    """Templates ship inside the wheel as nimop/manifests; a source checkout has manifests/."""
    packaged = Path(__file__).parent / "manifests"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "manifests"


@lru_cache(maxsize=8)
def environment(templates_dir: Path) -> jinja2.Environment:
    if not templates_dir.is_dir():
        raise FileNotFoundError(f"template directory {templates_dir} does not exist")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["y"] = to_yaml
    return env


def template_names(env: jinja2.Environment) -> list[str]:
    """Templates by name, skipping hidden paths: a ConfigMap mounted as a directory also holds
    its files under `..data/` and a timestamped `..<date>/`, which would render twice."""
    return sorted(
        n
        for n in env.list_templates()
        if n.endswith(TEMPLATE_SUFFIX) and not any(part.startswith(".") for part in n.split("/"))
    )


def canonical_hash(obj: Any, length: int = 10) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def stamp_revision(deployment: Obj) -> str:
    """Label the pod template with a hash of itself: the revision rollouts are tracked by."""
    template = deployment["spec"]["template"]
    labels = template.setdefault("metadata", {}).setdefault("labels", {})
    labels.pop(names.LABEL_REVISION, None)
    revision = canonical_hash(template)
    labels[names.LABEL_REVISION] = revision
    return revision


def render(params: Params, templates_dir: Path | None = None) -> list[Obj]:
    """Every object the templates produce for these params, Deployments revision-stamped."""
    env = environment(templates_dir or default_templates_dir())
    context = {"p": params}
    objects: list[Obj] = []
    for template_name in template_names(env):
        text = env.get_template(template_name).render(context)
        for doc in yaml.load_all(text, Loader=_Loader):
            if doc:
                objects.append(doc)
    for obj in objects:
        if obj.get("kind") == "Deployment":
            stamp_revision(obj)
    return objects


def replace_pod_template(deployment: Obj, template: Obj) -> Obj:
    """The Deployment with another revision's pod template, as a rollback applies it."""
    result: Obj = json.loads(json.dumps(deployment))
    template = json.loads(json.dumps(template))
    template.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
    result["spec"]["template"] = template
    return result


def deployment_of(objects: list[Obj]) -> Obj:
    return next(o for o in objects if o.get("kind") == "Deployment")


def revision_of(deployment: Obj | None) -> str | None:
    if not deployment:
        return None
    labels = deployment["spec"]["template"].get("metadata", {}).get("labels", {})
    value = labels.get(names.LABEL_REVISION)
    return value if isinstance(value, str) else None


def describe(params: Params) -> dict[str, Any]:
    """Params as plain data, for debugging custom templates (`nimop render --params`)."""
    return dataclasses.asdict(params)
