"""The API client's JSON decoding: fast for what the API server sends, never failing on depth."""

from __future__ import annotations

import json

from nimop.runtime import kube


def test_decodes_what_json_decodes() -> None:
    body = {"a": [1, 2.5, None, True], "big": 12345678901234567890123, "s": "ünï\u2028"}
    raw = json.dumps(body).encode()
    assert kube.decode_json(raw) == json.loads(raw) == body


def test_nesting_beyond_the_fast_parser_falls_back_to_json() -> None:
    deep = "[" * 500 + "]" * 500
    assert kube.decode_json(deep) == json.loads(deep)
