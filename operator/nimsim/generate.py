"""Deterministic answers, truncated the way a real model's output would be.

Determinism matters more than variety here: tests compare streaming against
non-streaming output and expect repeated requests to agree, so the answer is a
pure function of the conversation. Sampling parameters such as temperature are
validated by the API layer but do not change the text.

Answers come from a small table of canned replies (so demos read sensibly) or,
for anything else, from a fixed vocabulary seeded by a hash of the whole
conversation. Generic answers run to a few hundred tokens so that ``max_tokens``
truncation is observable. With ``n > 1`` each further choice is a different
variant of the generic answer, as sampling at a non-zero temperature would give.

Structured output (``response_format``) and tool-call arguments are JSON values
built from the given JSON Schema, so they parse and validate as a guided-decoding
server's output would (vLLM constrains generation to the schema).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from nimsim.schema import Message, Tool
from nimsim.tokens import count_tokens, tokenize

FinishReason = Literal["stop", "length"]

GENERIC_ANSWER_MIN_TOKENS = 300

CANNED_ANSWERS: dict[str, str] = {
    "what is the capital of france": "The capital of France is Paris.",
    "count from 1 to 10": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
    "hi": "Hello! How can I help you today?",
    "hello": "Hello! How can I help you today?",
}

_OPENERS = (
    "In short,",
    "Broadly speaking,",
    "In practice,",
    "To put it simply,",
    "In most deployments,",
    "As a rule of thumb,",
)
_SUBJECTS = (
    "the inference service",
    "a well-sized GPU node",
    "the scheduler",
    "each replica",
    "the model server",
    "a careful operator",
    "the autoscaler",
    "the serving stack",
    "a readiness probe",
    "the request queue",
)
_VERBS = (
    "balances",
    "improves",
    "depends on",
    "keeps track of",
    "reduces",
    "protects",
    "measures",
    "shapes",
    "simplifies",
    "exposes",
)
_OBJECTS = (
    "the latency of every request",
    "throughput under load",
    "the memory held by the KV cache",
    "the cost of idle capacity",
    "the health of the cluster",
    "the time to first token",
    "the quality of the answers",
    "how quickly new versions roll out",
    "the number of concurrent users",
    "the stability of the deployment",
)
_TAILS = (
    "",
    " when traffic grows",
    " during a rolling update",
    " across several nodes",
    " without manual tuning",
    " for long prompts",
    " in production",
)
_SENTENCES_PER_PARAGRAPH = 4


@dataclass(frozen=True)
class Completion:
    """What the model "generated": the visible text and the tokens it cost."""

    content: str
    finish_reason: FinishReason
    completion_tokens: int
    stop_string: str | None = None
    """The stop sequence that ended the output, if one did."""


def natural_answer(messages: Sequence[Message], variant: int = 0) -> str:
    """The full answer the simulated model would give if nothing cut it short.

    After a tool result (the last message has role ``tool``) the answer reports
    that result, as a model answering from a function's output does.
    """
    if messages and messages[-1].role == "tool":
        result = " ".join(messages[-1].content.split())[:200]
        return f"According to the tool result, {result}" if result else "The tool returned nothing."
    question = next((m.content for m in reversed(messages) if m.role == "user"), None)
    if question is None:
        question = messages[-1].content if messages else ""
    canned = CANNED_ANSWERS.get(_normalise(question))
    if canned is not None:
        return canned
    return _generic_answer(messages, variant)


def tool_to_call(messages: Sequence[Message], tools: Sequence[Tool]) -> Tool | None:
    """With ``tool_choice: auto``: the tool the user's last message asks for, if any.

    A real model decides from the conversation; the simulator calls a tool when
    the last message is the user's and names the function (``get_weather`` or
    "get weather"), which keeps tests deterministic and readable.
    """
    if not messages or messages[-1].role != "user":
        return None
    text = messages[-1].content.lower()
    for tool in tools:
        name = tool.name.lower()
        if name in text or name.replace("_", " ") in text:
            return tool
    return None


def json_answer(schema: Mapping[str, Any] | None, messages: Sequence[Message]) -> str:
    """JSON text for ``response_format``: schema-shaped, or a small object without a schema."""
    if schema is None:
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        answer = natural_answer(messages).split("\n", 1)[0]
        return json.dumps({"question": question, "answer": answer})
    return json.dumps(json_value(schema, schema, _seeded(messages, 0)))


def tool_arguments(tool: Tool, messages: Sequence[Message]) -> str:
    """The JSON arguments of a call to ``tool``, valid against its parameters schema."""
    schema: Mapping[str, Any] = tool.parameters or {"type": "object", "properties": {}}
    return json.dumps(json_value(schema, schema, _seeded(messages, 0)))


def json_value(schema: Mapping[str, Any], root: Mapping[str, Any], rng: random.Random) -> Any:
    """A value that validates against ``schema`` (the common JSON Schema keywords)."""
    if "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return json_value(target, root, rng)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if schema.get(combinator):
            return json_value(schema[combinator][0], root, rng)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties", {})
        return {name: json_value(sub, root, rng) for name, sub in properties.items()}
    if kind == "array":
        items: Mapping[str, Any] = schema.get("items", {"type": "string"})
        count = max(int(schema.get("minItems", 1)), 1)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        return [json_value(items, root, rng) for _ in range(count)]
    if kind in ("integer", "number"):
        low = math.ceil(float(schema.get("minimum", schema.get("exclusiveMinimum", 0))))
        if "exclusiveMinimum" in schema and low <= float(schema["exclusiveMinimum"]):
            low += 1
        high = math.floor(float(schema.get("maximum", schema.get("exclusiveMaximum", low + 100))))
        if "exclusiveMaximum" in schema and high >= float(schema["exclusiveMaximum"]):
            high -= 1
        value = rng.randint(low, max(low, high))
        return value if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = rng.choice(_SUBJECTS)
    minimum = int(schema.get("minLength", 0))
    if len(text) < minimum:
        text = text.ljust(minimum, "x")
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    return text


def complete(answer: str, max_tokens: int, stop: Sequence[str] = ()) -> Completion:
    """Emit ``answer`` token by token until it ends, hits a stop string or the budget.

    As in vLLM, the end-of-sequence token counts as a generated token, so a
    natural finish needs one token of budget beyond the text itself; an answer
    of exactly ``max_tokens`` tokens therefore finishes with ``"length"``.
    A stop string is removed from the output together with anything after it,
    but the tokens spent producing it are still counted.
    """
    stops = [s for s in stop if s]
    text = ""
    produced = 0
    for token in tokenize(answer):
        if produced >= max_tokens:
            return Completion(text, "length", produced)
        previous_length = len(text)
        text += token
        produced += 1
        cut = _first_stop(text, stops, previous_length)
        if cut is not None:
            index, matched = cut
            return Completion(text[:index], "stop", produced, matched)
    if produced >= max_tokens:
        return Completion(text, "length", produced)
    return Completion(text, "stop", produced + 1)


def _first_stop(text: str, stops: Sequence[str], previous_length: int) -> tuple[int, str] | None:
    """Earliest start of a stop string that the newest token completed, and that string."""
    best: tuple[int, str] | None = None
    for stop in stops:
        index = text.find(stop, max(0, previous_length - len(stop) + 1))
        if index != -1 and (best is None or index < best[0]):
            best = (index, stop)
    return best


def _normalise(question: str) -> str:
    return re.sub(r"\s+", " ", question).strip().rstrip(".!?").strip().lower()


def _seeded(messages: Sequence[Message], variant: int) -> random.Random:
    digest = hashlib.sha256()
    for message in messages:
        digest.update(message.role.encode())
        digest.update(b"\0")
        digest.update(message.content.encode())
        digest.update(b"\0")
    if variant:
        digest.update(f"variant {variant}".encode())
    return random.Random(int.from_bytes(digest.digest()[:8], "big"))


def _generic_answer(messages: Sequence[Message], variant: int = 0) -> str:
    rng = _seeded(messages, variant)

    paragraphs: list[str] = []
    sentences: list[str] = []
    tokens = 0
    while tokens < GENERIC_ANSWER_MIN_TOKENS:
        sentence = (
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
            f"{rng.choice(_TAILS)}."
        )
        if rng.random() < 0.3:
            sentence = f"{rng.choice(_OPENERS)} {sentence}"
        sentence = sentence[0].upper() + sentence[1:]
        sentences.append(sentence)
        tokens += count_tokens(sentence)
        if len(sentences) == _SENTENCES_PER_PARAGRAPH:
            paragraphs.append(" ".join(sentences))
            sentences = []
    if sentences:
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)
