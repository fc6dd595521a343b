"""Validation of chat and text completion requests into a typed, trusted form.

Validation is written out by hand rather than delegated to a model library so
each rejection carries the exact ``code`` and ``param`` that OpenAI-compatible
clients show to users, and so the rules read as a checklist of the API.

What is accepted follows vLLM's OpenAI server, which NIM for LLMs runs
(``vllm/entrypoints/openai/protocol.py``: ``ChatCompletionRequest``,
``CompletionRequest``): unknown fields are ignored (vLLM logs and ignores them,
as NIM does for ``nvext``); ``null`` for an optional field means "not given";
content may be a string, an array of text parts, or ``null`` on an assistant
message that carries ``tool_calls``; ``max_completion_tokens`` wins over
``max_tokens``; ``stream_options`` needs ``stream`` and its ``include_usage``
defaults to true; ``top_logprobs`` needs ``logprobs``; ``tool_choice`` needs
``tools`` and a named choice must name one of them. Where vLLM is looser than
OpenAI (any role string, no cap on stop sequences) the simulator rejects only
what OpenAI's API rejects too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from nimsim.errors import ApiError, invalid_request

Role = Literal["system", "developer", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "developer", "user", "assistant", "tool")
MAX_N = 128
MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5
DEFAULT_COMPLETION_MAX_TOKENS = 16  # vLLM's CompletionRequest.max_tokens default
_INT64 = 2**63


@dataclass(frozen=True)
class ToolCall:
    """A function call, as an assistant message carries it or a response returns it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None


ToolChoice = Literal["none", "auto", "required"]


@dataclass(frozen=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"]
    schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Sampling:
    """What both endpoints share: length, stops, streaming, n and the sampling knobs."""

    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    continuous_usage: bool = False
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    logit_bias: Mapping[str, float] = field(default_factory=dict)
    user: str | None = None
    response_format: ResponseFormat | None = None


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    sampling: Sampling = field(default_factory=Sampling)
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | str = "none"
    """"none", "auto", "required", or the name of the one function to call."""
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def stream(self) -> bool:
        return self.sampling.stream


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompts: tuple[str, ...]
    prompt_token_counts: tuple[int | None, ...]
    """Length of each prompt given as token ids (None for text prompts)."""
    sampling: Sampling = field(default_factory=Sampling)
    echo: bool = False
    logprobs: int | None = None

    @property
    def stream(self) -> bool:
        return self.sampling.stream


# -- entry points --------------------------------------------------------------------------


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Decode and validate a chat completion body; raises :class:`ApiError` (400) when invalid."""
    fields = _object_body(raw)
    model = _model(fields)
    messages = _messages(fields)
    tools = _tools(fields.get("tools"))
    logprobs = _optional_bool(fields, "logprobs") or False
    top_logprobs = _optional_int(fields, "top_logprobs", 0, MAX_TOP_LOGPROBS) or 0
    if top_logprobs and not logprobs:
        raise invalid_request(
            "when using `top_logprobs`, `logprobs` must be set to true.",
            code="invalid_value",
            param="top_logprobs",
        )
    return ChatRequest(
        model=model,
        messages=messages,
        sampling=_sampling(fields, default_max_tokens=None),
        tools=tools,
        tool_choice=_tool_choice(fields, tools),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def parse_completion_request(raw: bytes) -> CompletionRequest:
    """Decode and validate a ``/v1/completions`` body; raises :class:`ApiError` (400)."""
    fields = _object_body(raw)
    model = _model(fields)
    prompts, counts = _prompts(fields)
    if fields.get("suffix") is not None:
        raise invalid_request(
            "suffix is not currently supported", code="unsupported_parameter", param="suffix"
        )
    logprobs = _optional_int(fields, "logprobs", 0, MAX_COMPLETION_LOGPROBS)
    sampling = _sampling(fields, default_max_tokens=DEFAULT_COMPLETION_MAX_TOKENS)
    best_of = _optional_int(fields, "best_of", 1, MAX_N)
    if best_of is not None and best_of < sampling.n:
        raise invalid_request(
            f"best_of must be greater than or equal to n, got n={sampling.n} and "
            f"best_of={best_of}.",
            code="invalid_value",
            param="best_of",
        )
    return CompletionRequest(
        model=model,
        prompts=prompts,
        prompt_token_counts=counts,
        sampling=sampling,
        echo=_optional_bool(fields, "echo") or False,
        logprobs=logprobs,
    )


# -- the body and its common fields --------------------------------------------------------


def _object_body(raw: bytes) -> Mapping[str, object]:
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
    return cast(Mapping[str, object], body)


def _model(fields: Mapping[str, object]) -> str:
    model = _required(fields, "model")
    if not isinstance(model, str):
        raise _wrong_type("model", "a string", model)
    return model


def _sampling(fields: Mapping[str, object], *, default_max_tokens: int | None) -> Sampling:
    stream = _optional_bool(fields, "stream") or False
    include_usage = continuous = False
    stream_options = fields.get("stream_options")
    if stream_options is not None:
        if not isinstance(stream_options, dict):
            raise _wrong_type("stream_options", "an object", stream_options)
        if not stream:
            raise invalid_request(
                "Stream options can only be defined when `stream=True`.",
                code="invalid_value",
                param="stream_options",
            )
        options = cast(Mapping[str, object], stream_options)
        usage = _optional_bool(options, "include_usage", label="stream_options.include_usage")
        include_usage = True if usage is None else usage
        continuous = (
            _optional_bool(
                options, "continuous_usage_stats", label="stream_options.continuous_usage_stats"
            )
            or False
        )
    n = _optional_int(fields, "n", 1, MAX_N)
    return Sampling(
        max_tokens=_max_tokens(fields, default_max_tokens),
        stop=_stop(fields.get("stop")),
        stream=stream,
        include_usage=include_usage,
        continuous_usage=continuous,
        n=1 if n is None else n,
        temperature=_number(fields, "temperature", 0.0, 2.0),
        top_p=_number(fields, "top_p", 0.0, 1.0, exclusive_low=True),
        presence_penalty=_number(fields, "presence_penalty", -2.0, 2.0),
        frequency_penalty=_number(fields, "frequency_penalty", -2.0, 2.0),
        seed=_optional_int(fields, "seed", -_INT64, _INT64 - 1),
        logit_bias=_logit_bias(fields.get("logit_bias")),
        user=_optional_str(fields, "user"),
        response_format=_response_format(fields.get("response_format")),
    )


def _max_tokens(fields: Mapping[str, object], default: int | None) -> int | None:
    # vLLM: max_tokens = request.max_completion_tokens or request.max_tokens
    for name in ("max_completion_tokens", "max_tokens"):
        value = fields.get(name)
        if value is None:
            continue
        if not _is_int(value):
            raise _wrong_type(name, "an integer", value)
        number = cast(int, value)
        if number < 1:
            raise invalid_request(
                f"{name} must be at least 1, got {number}", code="invalid_value", param=name
            )
        return number
    if "max_tokens" in fields or "max_completion_tokens" in fields:
        return None  # an explicit null: "as many as fit"
    return default


# -- messages ------------------------------------------------------------------------------


def _messages(fields: Mapping[str, object]) -> tuple[Message, ...]:
    raw = _required(fields, "messages")
    if not isinstance(raw, list):
        raise _wrong_type("messages", "an array", raw)
    if not raw:
        raise invalid_request(
            "messages must contain at least one message", code="invalid_value", param="messages"
        )
    return tuple(_message(f"messages[{i}]", item) for i, item in enumerate(raw))


def _message(where: str, item: object) -> Message:
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
    tool_calls = _message_tool_calls(where, entry.get("tool_calls"))
    if tool_calls and role != "assistant":
        raise invalid_request(
            f"{where}.tool_calls is only allowed on assistant messages",
            code="invalid_value",
            param=f"{where}.tool_calls",
        )
    if "content" not in entry and not tool_calls:
        raise invalid_request(
            f"Missing required parameter: '{where}.content'",
            code="missing_required_parameter",
            param=f"{where}.content",
        )
    content = entry.get("content")
    if content is None:
        if role != "assistant":
            raise invalid_request(
                f"{where}.content may only be null on an assistant message",
                code="missing_required_parameter",
                param=f"{where}.content",
            )
        text = ""
    else:
        text = _content_text(f"{where}.content", content)
    tool_call_id = entry.get("tool_call_id")
    if tool_call_id is not None and not isinstance(tool_call_id, str):
        raise _wrong_type(f"{where}.tool_call_id", "a string", tool_call_id)
    return Message(
        role=role,
        content=text,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id,
    )


def _content_text(where: str, content: object) -> str:
    """A message's text: a string, or the text parts of an array joined by newlines."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _wrong_type(where, "a string or an array of content parts", content)
    texts: list[str] = []
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        if not isinstance(part, dict):
            raise _wrong_type(at, "an object", part)
        piece = cast(Mapping[str, object], part)
        kind = _required(piece, "type", label=f"{at}.type")
        if kind == "text":
            text = _required(piece, "text", label=f"{at}.text")
            if not isinstance(text, str):
                raise _wrong_type(f"{at}.text", "a string", text)
            texts.append(text)
        elif kind in ("image_url", "input_audio", "video_url", "file"):
            raise invalid_request(
                f"{at}.type {kind!r} is not supported: this model accepts text only",
                code="unsupported_value",
                param=f"{at}.type",
            )
        else:
            raise invalid_request(
                f"{at}.type must be 'text', got {json.dumps(kind)}",
                code="invalid_value",
                param=f"{at}.type",
            )
    return "\n".join(texts)


def _message_tool_calls(where: str, raw: object) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _wrong_type(f"{where}.tool_calls", "an array", raw)
    calls: list[ToolCall] = []
    for index, item in enumerate(raw):
        at = f"{where}.tool_calls[{index}]"
        if not isinstance(item, dict):
            raise _wrong_type(at, "an object", item)
        call = cast(Mapping[str, object], item)
        function = _required(call, "function", label=f"{at}.function")
        if not isinstance(function, dict):
            raise _wrong_type(f"{at}.function", "an object", function)
        spec = cast(Mapping[str, object], function)
        name = _required(spec, "name", label=f"{at}.function.name")
        if not isinstance(name, str):
            raise _wrong_type(f"{at}.function.name", "a string", name)
        arguments = spec.get("arguments", "")
        if not isinstance(arguments, str):
            raise _wrong_type(f"{at}.function.arguments", "a string of JSON", arguments)
        call_id = call.get("id", "")
        if not isinstance(call_id, str):
            raise _wrong_type(f"{at}.id", "a string", call_id)
        calls.append(ToolCall(call_id, name, arguments))
    return tuple(calls)


# -- tools ---------------------------------------------------------------------------------


def _tools(raw: object) -> tuple[Tool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _wrong_type("tools", "an array", raw)
    tools: list[Tool] = []
    for index, item in enumerate(raw):
        at = f"tools[{index}]"
        if not isinstance(item, dict):
            raise _wrong_type(at, "an object", item)
        entry = cast(Mapping[str, object], item)
        kind = entry.get("type", "function")
        if kind != "function":
            raise invalid_request(
                f"{at}.type must be 'function', got {json.dumps(kind)}",
                code="invalid_value",
                param=f"{at}.type",
            )
        function = _required(entry, "function", label=f"{at}.function")
        if not isinstance(function, dict):
            raise _wrong_type(f"{at}.function", "an object", function)
        spec = cast(Mapping[str, object], function)
        name = _required(spec, "name", label=f"{at}.function.name")
        if not isinstance(name, str) or not name:
            raise _wrong_type(f"{at}.function.name", "a non-empty string", name)
        description = spec.get("description") or ""
        if not isinstance(description, str):
            raise _wrong_type(f"{at}.function.description", "a string", description)
        parameters = spec.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _wrong_type(f"{at}.function.parameters", "a JSON Schema object", parameters)
        tools.append(Tool(name, description, cast(Mapping[str, Any] | None, parameters)))
    return tuple(tools)


def _tool_choice(fields: Mapping[str, object], tools: Sequence[Tool]) -> ToolChoice | str:
    raw = fields.get("tool_choice")
    if raw is None:
        return "auto" if tools else "none"
    if raw == "none":
        return "none"
    if not tools:
        if raw == "required" and isinstance(fields.get("tools"), list):
            return "none"  # vLLM and OpenAI: "required" with an empty list behaves like "none"
        raise invalid_request(
            "When using `tool_choice`, `tools` must be set.",
            code="invalid_value",
            param="tool_choice",
        )
    if raw == "auto" or raw == "required":
        return raw
    usage = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'
    if not isinstance(raw, dict):
        raise invalid_request(
            f"Invalid value for `tool_choice`: {json.dumps(raw)}! Only named tools, "
            f'"none", "auto" or "required" are supported.',
            code="invalid_value",
            param="tool_choice",
        )
    function = cast(Mapping[str, object], raw).get("function")
    if not isinstance(function, dict):
        raise invalid_request(
            f"Invalid value for `function` in `tool_choice`! {usage}",
            code="invalid_value",
            param="tool_choice.function",
        )
    name = cast(Mapping[str, object], function).get("name")
    if not isinstance(name, str) or not name:
        raise invalid_request(
            f"Invalid `name` in `function` in `tool_choice`! {usage}",
            code="invalid_value",
            param="tool_choice.function.name",
        )
    if name not in {tool.name for tool in tools}:
        raise invalid_request(
            "The tool specified in `tool_choice` does not match any of the specified `tools`",
            code="invalid_value",
            param="tool_choice",
        )
    return name


def _response_format(raw: object) -> ResponseFormat | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _wrong_type("response_format", "an object", raw)
    entry = cast(Mapping[str, object], raw)
    kind = _required(entry, "type", label="response_format.type")
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind != "json_schema":
        raise invalid_request(
            "response_format.type must be 'text', 'json_object' or 'json_schema', "
            f"got {json.dumps(kind)}",
            code="invalid_value",
            param="response_format.type",
        )
    spec = _required(entry, "json_schema", label="response_format.json_schema")
    if not isinstance(spec, dict):
        raise _wrong_type("response_format.json_schema", "an object", spec)
    schema_spec = cast(Mapping[str, object], spec)
    name = _required(schema_spec, "name", label="response_format.json_schema.name")
    if not isinstance(name, str):
        raise _wrong_type("response_format.json_schema.name", "a string", name)
    schema = schema_spec.get("schema")
    if schema is not None and not isinstance(schema, dict):
        raise _wrong_type("response_format.json_schema.schema", "a JSON Schema object", schema)
    return ResponseFormat("json_schema", cast(Mapping[str, Any] | None, schema))


# -- completions prompts -------------------------------------------------------------------


def _prompts(fields: Mapping[str, object]) -> tuple[tuple[str, ...], tuple[int | None, ...]]:
    raw = fields.get("prompt")
    if raw is None:
        raise invalid_request(
            "At least one of `prompt` or `prompt_embeds` must be set.",
            code="missing_required_parameter",
            param="prompt",
        )
    if isinstance(raw, str):
        return (raw,), (None,)
    if not isinstance(raw, list) or not raw:
        raise _wrong_type("prompt", "a string, an array of strings or of token ids", raw)
    if all(isinstance(p, str) for p in raw):
        prompts = cast(list[str], raw)
        return tuple(prompts), tuple(None for _ in prompts)
    if all(_is_int(t) for t in raw):
        return (_token_text(cast(list[int], raw)),), (len(raw),)
    if all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in raw):
        lists = cast(list[list[int]], raw)
        return tuple(_token_text(p) for p in lists), tuple(len(p) for p in lists)
    raise _wrong_type("prompt", "a string, an array of strings or of token ids", raw)


def _token_text(tokens: Sequence[int]) -> str:
    """Token ids have no vocabulary here; each becomes one stand-in word."""
    return " ".join(f"t{token}" for token in tokens)


# -- small field readers -------------------------------------------------------------------


def _stop(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise _wrong_type("stop", "a string or an array of strings", raw)
    return tuple(cast(list[str], raw))


def _logit_bias(raw: object) -> Mapping[str, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _wrong_type("logit_bias", "an object of token id -> bias", raw)
    bias: dict[str, float] = {}
    for key, value in cast(dict[str, object], raw).items():
        if not key.lstrip("-").isdigit():
            raise invalid_request(
                f"logit_bias keys must be token ids, got {json.dumps(key)}",
                code="invalid_value",
                param="logit_bias",
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type(f"logit_bias[{key}]", "a number", value)
        if not -100 <= value <= 100:
            raise invalid_request(
                f"logit_bias[{key}] must be in [-100, 100], got {value}",
                code="invalid_value",
                param="logit_bias",
            )
        bias[key] = float(value)
    return bias


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


def _optional_int(fields: Mapping[str, object], name: str, low: int, high: int) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise _wrong_type(name, "an integer", value)
    number = cast(int, value)
    if not low <= number <= high:
        raise invalid_request(
            f"{name} must be between {low} and {high}, got {number}",
            code="invalid_value",
            param=name,
        )
    return number


def _optional_str(fields: Mapping[str, object], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _wrong_type(name, "a string", value)
    return value


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
