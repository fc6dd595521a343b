"""Validation of chat-completion requests into a typed, trusted form.

Validation is written out by hand rather than delegated to a model library so
each rejection carries the exact ``code`` and ``param`` that OpenAI-compatible
clients show to users, and so the rules read as a checklist of the API.

Unknown fields are ignored, as NIM does for extensions like ``nvext`` or
``seed``; ``null`` for an optional field means "not given".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

from nimsim.errors import ApiError, invalid_request

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")
MAX_STOP_SEQUENCES = 4


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Decode and validate a request body; raises :class:`ApiError` (400) when invalid."""
    try:
        body: object = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid_request(
            f"Request body is not valid JSON: {exc}", code="invalid_json", param=None
        ) from None
    if not isinstance(body, dict):
        raise invalid_request(
            f"Request body must be a JSON object, got {_json_type(body)}",
            code="invalid_type",
            param=None,
        )
    fields = cast(Mapping[str, object], body)

    model = _required(fields, "model")
    if not isinstance(model, str):
        raise _wrong_type("model", "a string", model)
    messages = _messages(fields)

    stream = _optional_bool(fields, "stream") or False
    include_usage = False
    stream_options = fields.get("stream_options")
    if stream_options is not None:
        if not stream:
            raise invalid_request(
                "stream_options is only allowed when stream is true",
                code="invalid_value",
                param="stream_options",
            )
        if not isinstance(stream_options, dict):
            raise _wrong_type("stream_options", "an object", stream_options)
        include_usage = (
            _optional_bool(
                cast(Mapping[str, object], stream_options),
                "include_usage",
                label="stream_options.include_usage",
            )
            or False
        )

    n = fields.get("n")
    if n is not None:
        if not _is_int(n):
            raise _wrong_type("n", "an integer", n)
        if n != 1:
            raise invalid_request(
                f"Only n=1 is supported, got n={n}", code="unsupported_value", param="n"
            )

    max_tokens_field = "max_tokens" if fields.get("max_tokens") is not None else None
    if max_tokens_field is None and fields.get("max_completion_tokens") is not None:
        max_tokens_field = "max_completion_tokens"
    max_tokens: int | None = None
    if max_tokens_field is not None:
        value = fields[max_tokens_field]
        if not _is_int(value):
            raise _wrong_type(max_tokens_field, "an integer", value)
        max_tokens = cast(int, value)
        if max_tokens < 1:
            raise invalid_request(
                f"{max_tokens_field} must be at least 1, got {max_tokens}",
                code="invalid_value",
                param=max_tokens_field,
            )

    return ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        stop=_stop(fields.get("stop")),
        stream=stream,
        include_usage=include_usage,
        temperature=_number(fields, "temperature", 0.0, 2.0),
        top_p=_number(fields, "top_p", 0.0, 1.0, exclusive_low=True),
        presence_penalty=_number(fields, "presence_penalty", -2.0, 2.0),
        frequency_penalty=_number(fields, "frequency_penalty", -2.0, 2.0),
    )


def _messages(fields: Mapping[str, object]) -> tuple[Message, ...]:
    raw = _required(fields, "messages")
    if not isinstance(raw, list):
        raise _wrong_type("messages", "an array", raw)
    if not raw:
        raise invalid_request(
            "messages must contain at least one message", code="invalid_value", param="messages"
        )
    messages: list[Message] = []
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise _wrong_type(where, "an object", item)
        entry = cast(Mapping[str, object], item)
        role = _required(entry, "role", label=f"{where}.role")
        if role not in ROLES:
            raise invalid_request(
                f"{where}.role must be one of {', '.join(ROLES)}, got {json.dumps(role)}",
                code="invalid_value",
                param=f"{where}.role",
            )
        content = _required(entry, "content", label=f"{where}.content")
        if not isinstance(content, str):
            raise _wrong_type(f"{where}.content", "a string", content)
        messages.append(Message(role=role, content=content))
    return tuple(messages)


def _stop(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise _wrong_type("stop", "a string or an array of strings", raw)
    if len(raw) > MAX_STOP_SEQUENCES:
        raise invalid_request(
            f"stop accepts at most {MAX_STOP_SEQUENCES} sequences, got {len(raw)}",
            code="invalid_value",
            param="stop",
        )
    return tuple(cast(list[str], raw))


def _number(
    fields: Mapping[str, object],
    name: str,
    low: float,
    high: float,
    *,
    exclusive_low: bool = False,
) -> float | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type(name, "a number", value)
    number = float(value)
    too_low = number <= low if exclusive_low else number < low
    if math.isnan(number) or too_low or number > high:
        bracket = "(" if exclusive_low else "["
        raise invalid_request(
            f"{name} must be in {bracket}{low:g}, {high:g}], got {value}",
            code="invalid_value",
            param=name,
        )
    return number


def _optional_bool(fields: Mapping[str, object], name: str, *, label: str = "") -> bool | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _wrong_type(label or name, "a boolean", value)
    return value


def _required(fields: Mapping[str, object], name: str, *, label: str = "") -> object:
    value = fields.get(name)
    if value is None:
        param = label or name
        raise invalid_request(
            f"Missing required parameter: '{param}'",
            code="missing_required_parameter",
            param=param,
        )
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _wrong_type(param: str, expected: str, value: object) -> ApiError:
    return invalid_request(
        f"{param} must be {expected}, got {_json_type(value)}", code="invalid_type", param=param
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
