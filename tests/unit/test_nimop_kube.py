"""The API client's JSON: fast for what the API server sends and is sent, never failing on depth."""

from __future__ import annotations

import json
import sys

from nimop.runtime import kube


def test_decodes_what_json_decodes() -> None:
    body = {"a": [1, 2.5, None, True], "big": 12345678901234567890123, "s": "ünï\u2028"}
    raw = json.dumps(body).encode()
    assert kube.decode_json(raw) == json.loads(raw) == body


def test_nesting_beyond_the_fast_parser_falls_back_to_json() -> None:
    deep = "[" * 500 + "]" * 500
    assert kube.decode_json(deep) == json.loads(deep)


def test_encodes_what_json_encodes() -> None:
    body = {"metadata": {"labels": {"a": "ü\u2028"}}, "spec": {"n": 12345678901234567890123}}
    assert json.loads(kube.encode_json(body)) == body


def test_nesting_beyond_the_fast_serialiser_falls_back_to_json() -> None:
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(1000):
        inner["a"] = {}
        inner = inner["a"]  # type: ignore[assignment]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        assert json.loads(kube.encode_json(deep)) == deep
    finally:
        sys.setrecursionlimit(limit)
