"""The requests of the NIM API reference, and what a valid answer to each looks like.

Request bodies are the reference document's own (/work/shared/reference/nim-api-examples.md,
"Chat Completions API", "Parameter Control", "Performance Testing"), so a passing check means
exactly "the curl examples work". Answers are judged by the OpenAI chat completion object, which
NIM serves through vLLM (https://docs.nvidia.com/nim/large-language-models/latest/reference/
api-reference.html; vLLM `vllm/entrypoints/openai/protocol.py`, ChatCompletionResponse):
``object`` "chat.completion", ``choices[0].message`` with role "assistant" and text, a
``finish_reason``, and ``usage``. Errors come in two shapes: OpenAI's and newer vLLM's
``{"error": {"message", "type", "code"}}``, and older vLLM's flat
``{"object": "error", "message", "type", "code"}``; both are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nimcheck.transport import Reply, one_line

CHAT_PATH = "/v1/chat/completions"
FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter")

Message = dict[str, str]


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def system(text: str) -> Message:
    return {"role": "system", "content": text}


def assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


@dataclass(frozen=True)
class ChatCase:
    """One request from the reference: the messages and the sampling parameters it sends."""

    messages: tuple[Message, ...]
    params: Mapping[str, Any]

    def body(self, model: str, **extra: Any) -> dict[str, Any]:
        return {"model": model, "messages": list(self.messages), **self.params, **extra}


def case(messages: Sequence[Message], **params: Any) -> ChatCase:
    return ChatCase(tuple(messages), params)


BASIC = case([user("What is the capital of France?")], max_tokens=50)
SYSTEM_PROMPT = case(
    [
        system("You are a helpful technical expert specializing in cloud computing."),
        user("What is Kubernetes?"),
    ],
    max_tokens=150,
    temperature=0.7,
)
MULTI_TURN = case(
    [
        system("You are a technical expert."),
        user("What is NVIDIA NIM?"),
        assistant(
            "NVIDIA NIM is a set of optimized inference microservices for deploying AI models."
        ),
        user("What are its benefits?"),
    ],
    max_tokens=200,
    temperature=0.7,
)
LOW_TEMPERATURE = case([user("Write a haiku about AI")], temperature=0.1, max_tokens=50)
HIGH_TEMPERATURE = case([user("Write a haiku about AI")], temperature=1.5, max_tokens=50)
TOP_P = case([user("Explain machine learning")], top_p=0.9, temperature=0.8, max_tokens=100)
PENALTIES = case(
    [user("List cloud providers")], presence_penalty=0.6, frequency_penalty=0.3, max_tokens=100
)
STOP_STRINGS = (" 5", "five")
STOP = case([user("Count from 1 to 10")], stop=list(STOP_STRINGS), max_tokens=100)
USAGE = case([user("Explain Kubernetes in detail")], max_tokens=500)
STREAM = case([user("Write a short story about AI")], stream=True, max_tokens=200)
LATENCY = case([user("Hi")], max_tokens=10)
THROUGHPUT = case([user("Hello")], max_tokens=10)
UNKNOWN_MODEL = case([user("Hi")])
UNKNOWN_MODEL_NAME = "invalid-model"


class ShapeError(Exception):
    """An answer that does not have the shape the API promises; the message says what is off."""


@dataclass(frozen=True)
class Completion:
    content: str
    finish_reason: str
    usage: Mapping[str, Any] | None

    @property
    def completion_tokens(self) -> int:
        value = (self.usage or {}).get("completion_tokens")
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def summary(self) -> str:
        tokens = f", {self.completion_tokens} tokens" if self.usage else ""
        return f"{self.finish_reason}{tokens}: {preview(self.content)}"


def completion(reply: Reply, model: str) -> Completion:
    """The completion in a 200 answer, or a ShapeError saying why this is not one."""
    if reply.status != 200:
        raise ShapeError(failure(reply))
    body = reply.json()
    if not isinstance(body, dict):
        raise ShapeError(f"200 but the body is not a JSON object: {reply.text()}")
    if body.get("object") != "chat.completion":
        raise ShapeError(f"object is {body.get('object')!r}, not 'chat.completion'")
    if body.get("model") != model:
        raise ShapeError(f"answered as model {body.get('model')!r}, not {model!r}")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ShapeError("no choices in the answer")
    choice: Mapping[str, Any] = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict) or message.get("role") != "assistant":
        raise ShapeError(
            f"choices[0].message is not an assistant message: {one_line(str(message))}"
        )
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ShapeError("choices[0].message.content is empty")
    finish = choice.get("finish_reason")
    if finish not in FINISH_REASONS:
        raise ShapeError(f"finish_reason is {finish!r}, not one of {', '.join(FINISH_REASONS)}")
    usage = body.get("usage")
    return Completion(content, str(finish), usage if isinstance(usage, dict) else None)


def usage_problem(usage: Mapping[str, Any] | None, max_tokens: int) -> str | None:
    """Why the usage block is missing or inconsistent, or None when it adds up."""
    if usage is None:
        return "the answer has no usage object"
    names = ("prompt_tokens", "completion_tokens", "total_tokens")
    missing = [n for n in names if not _is_int(usage.get(n))]
    if missing:
        return f"usage lacks integer {', '.join(missing)}: {one_line(str(dict(usage)))}"
    prompt, generated, total = (int(usage[n]) for n in names)
    if total != prompt + generated:
        return f"total_tokens {total} != prompt_tokens {prompt} + completion_tokens {generated}"
    if prompt <= 0:
        return f"prompt_tokens is {prompt} for a non-empty prompt"
    if not 0 < generated <= max_tokens:
        return f"completion_tokens {generated} is outside 1..max_tokens ({max_tokens})"
    return None


@dataclass(frozen=True)
class ApiErrorBody:
    message: str
    type: str
    code: str


def error_body(body: Any) -> ApiErrorBody | None:
    """The error object of an OpenAI-style (nested) or older vLLM (flat) error answer."""
    if not isinstance(body, dict):
        return None
    inner = body.get("error")
    if isinstance(inner, dict):
        source: Mapping[str, Any] = inner
    elif body.get("object") == "error":
        source = body
    else:
        return None
    message = source.get("message")
    if not isinstance(message, str) or not message:
        return None
    kind = source.get("type")
    code = source.get("code")
    return ApiErrorBody(
        message=message,
        type="" if kind is None else str(kind),
        code="" if code is None else str(code),
    )


def failure(reply: Reply) -> str:
    """A non-200 answer in words: status and, when there is one, the API's own message."""
    body = reply.json()
    err = error_body(body)
    if err is None:
        # NIM's health answers say why in a top-level message (ready: 503 while loading).
        if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
            return f"HTTP {reply.status}: {one_line(body['message'], 200)}"
        text = reply.text()
        return f"HTTP {reply.status}" + (f": {text}" if text else "")
    tag = "/".join(x for x in (err.type, err.code) if x)
    return f"HTTP {reply.status}" + (f" {tag}" if tag else "") + f": {one_line(err.message, 200)}"


def preview(text: str, limit: int = 60) -> str:
    return repr(one_line(text, limit))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
