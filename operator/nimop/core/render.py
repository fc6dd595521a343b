"""Render child objects from Jinja templates: params in, plain dicts out, no I/O after loading.

Each resource has its own templates, named `<resource>-<object>.yaml.j2` (nimservice-deployment,
nimcache-job, ...), so one directory serves every pipeline and an admin replaces any of them.

Templates are YAML with holes. A hole filled by raw text could inject fields (a newline and an
indent are enough), so every value must go through the `y` filter, which emits one line of
YAML flow syntax with every string double-quoted and escaped; `finalize` rejects any hole that
skipped the filter, so a template that forgets it fails loudly instead of rendering unsafely.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import jinja2
import yaml

from nimop import names

Obj = dict[str, Any]
TEMPLATE_SUFFIX = ".yaml.j2"
OBJECT_CACHE_SIZE = 64
PLAN_CACHE_SIZE = 8192

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


def _json_is_yaml(value: Any, depth: int = 0) -> bool:
    """Whether JSON text of `value` reads back as the same value in YAML 1.1 (PyYAML).

    JSON is YAML flow syntax, and json.dumps is C, where yaml.dump walks Python
    representers: it was a third of the cost of a render. Not for floats (PyYAML reads `1e-05`
    as a string), dicts with non-string keys, non-ASCII text (PyYAML decodes a surrogate pair
    as two lone surrogates), DEL (which PyYAML's reader refuses) or long keys (YAML allows an
    implicit key of at most 1024 characters, escapes included): those take yaml.dump."""
    kind = type(value)
    if kind is str:
        return bool(value.isascii() and "\x7f" not in value)
    if value is None or kind is bool or kind is int:
        return True
    if depth > 64:
        return False
    if kind is list or kind is tuple:
        return all(_json_is_yaml(v, depth + 1) for v in value)
    if kind is dict:
        return all(
            type(k) is str and len(k) <= 128 and _json_is_yaml(k) and _json_is_yaml(v, depth + 1)
            for k, v in value.items()
        )
    return False


def to_yaml(value: Any) -> YamlSafe:
    if _json_is_yaml(value):
        return YamlSafe(json.dumps(value, ensure_ascii=True))
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


@lru_cache(maxsize=1)
def default_templates_dir() -> Path:
    """Templates ship inside the wheel as nimop/manifests; a source checkout has manifests/.
    Looked up once: every pass asks, and resolving the path costs system calls."""
    here = Path(__file__).resolve()
    packaged = here.parents[1] / "manifests"
    return packaged if packaged.is_dir() else here.parents[3] / "manifests"


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


def template_names(env: jinja2.Environment, resource: str) -> list[str]:
    """A resource's templates by name, skipping hidden paths: a ConfigMap mounted as a directory
    also holds its files under `..data/` and a timestamped `..<date>/`, which would render
    twice."""
    return sorted(
        n
        for n in env.list_templates()
        if n.endswith(TEMPLATE_SUFFIX)
        and n.startswith(f"{resource}-")
        and not any(part.startswith(".") for part in n.split("/"))
    )


def canonical_hash(obj: Any, length: int = 10) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@lru_cache(maxsize=16)
def fingerprint(templates_dir: Path, resource: str) -> str:
    """A hash of a resource's template sources: part of every revision, so an admin's template
    change rolls out like a spec change. Read once per process (templates are fixed at start)."""
    env = environment(templates_dir)
    loader = env.loader
    assert loader is not None
    sources = {n: loader.get_source(env, n)[0] for n in template_names(env, resource)}
    return canonical_hash(sources, length=16)


K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        if len(self._items) > self._size:
            self._items.popitem(last=False)


CacheKey = tuple[str, str, str]
PlanItem = tuple[str, str, str, str]
"""apiVersion, kind, name and content hash of one rendered object."""
Plan = tuple[PlanItem, ...]

# Rendering is the costliest step of a pass, so its result is remembered by params hash. The
# objects themselves are kept for a few recent renders only; for every NimService, just what
# they are and their content hashes (a few hundred bytes), which is all a pass needs to see that
# nothing has to be applied. Objects are rendered again only when something must be applied.
_OBJECTS: _Lru[CacheKey, tuple[Obj, ...]] = _Lru(OBJECT_CACHE_SIZE)
_PLANS: _Lru[CacheKey, Plan] = _Lru(PLAN_CACHE_SIZE)


def content_hash(obj: Obj) -> str:
    """Hash of an object as rendered, leaving out the annotation that carries the hash."""
    meta = dict(obj["metadata"])
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k != names.ANNOTATION_APPLIED_HASH
    }
    meta["annotations"] = annotations
    return canonical_hash({**obj, "metadata": meta}, length=16)


def stamped(obj: Obj) -> Obj:
    """The object with its content hash annotated: apply compares it with the live copy's."""
    meta = dict(obj["metadata"])
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        names.ANNOTATION_APPLIED_HASH: content_hash(obj),
    }
    return {**obj, "metadata": meta}


def _plain(value: Any) -> Any:
    """A nested params dataclass as its fields, for json: no deep copy, unlike asdict."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return vars(value)
    return str(value)


def _key(params: Any, resource: str, templates_dir: Path) -> CacheKey:
    """Params are plain data (str, numbers, dicts and lists of them) in dataclasses; hashing
    their JSON directly costs a tenth of asdict's deep copy, and every pass computes it."""
    text = json.dumps(vars(params), sort_keys=True, separators=(",", ":"), default=_plain)
    return (str(templates_dir), resource, hashlib.sha256(text.encode()).hexdigest()[:32])


def render(
    params: Any, resource: str, templates_dir: Path | None = None, use_cache: bool = True
) -> tuple[Obj, ...]:
    """Every object a resource's templates produce for these params (a dataclass, reached as
    `p` in templates), each stamped with its content hash.

    The result may be cached and shared: treat it as read-only (`replace_pod_template` and the
    applier copy what they change)."""
    directory = templates_dir or default_templates_dir()
    key = _key(params, resource, directory)
    cached = _OBJECTS.get(key) if use_cache else None
    if cached is None:
        env = environment(directory)
        context = {"p": params}
        objects: list[Obj] = []
        for template_name in template_names(env, resource):
            text = env.get_template(template_name).render(context)
            objects.extend(stamped(doc) for doc in yaml.load_all(text, Loader=_Loader) if doc)
        cached = tuple(objects)
        _OBJECTS.put(key, cached)
        _PLANS.put(key, plan_of(cached))
    return cached


def plan_of(objects: tuple[Obj, ...] | list[Obj]) -> Plan:
    return tuple(
        (
            str(o["apiVersion"]),
            str(o["kind"]),
            str(o["metadata"]["name"]),
            str(o["metadata"]["annotations"][names.ANNOTATION_APPLIED_HASH]),
        )
        for o in objects
    )


def known_plan(params: Any, resource: str, templates_dir: Path | None = None) -> Plan | None:
    """What `render` produced for these params, if it is still remembered; never renders."""
    return _PLANS.get(_key(params, resource, templates_dir or default_templates_dir()))


def plan(params: Any, resource: str, templates_dir: Path | None = None) -> Plan:
    """What `render` would produce, as (apiVersion, kind, name, content hash): rendered at most
    once per params, then remembered."""
    directory = templates_dir or default_templates_dir()
    found = _PLANS.get(_key(params, resource, directory))
    return found if found is not None else plan_of(render(params, resource, directory))


def replace_pod_template(deployment: Obj, template: Obj) -> Obj:
    """The Deployment with another revision's pod template, as a rollback applies it."""
    result: Obj = copy.deepcopy(deployment)
    template = copy.deepcopy(template)
    template.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
    result["spec"]["template"] = template
    return stamped(result)


def find(objects: tuple[Obj, ...] | list[Obj], kind: str) -> Obj | None:
    return next((o for o in objects if o.get("kind") == kind), None)


def describe(params: Any) -> dict[str, Any]:
    """Params as plain data, for debugging custom templates (`nimop render --params`)."""
    result: dict[str, Any] = dataclasses.asdict(params)
    return result
