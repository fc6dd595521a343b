"""Deterministic answers, truncated the way a real model's output would be.

Determinism matters more than variety here: tests compare streaming against
non-streaming output and expect repeated requests to agree, so the answer is a
pure function of the conversation. Sampling parameters such as temperature are
validated by the API layer but do not change the text.

Answers come from a small table of canned replies (so demos read sensibly) or,
for anything else, from a fixed vocabulary seeded by a hash of the whole
conversation. Generic answers run to a few hundred tokens so that ``max_tokens``
truncation is observable.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from nimsim.schema import Message
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


def natural_answer(messages: Sequence[Message]) -> str:
    """The full answer the simulated model would give if nothing cut it short."""
    question = next((m.content for m in reversed(messages) if m.role == "user"), None)
    if question is None:
        question = messages[-1].content if messages else ""
    canned = CANNED_ANSWERS.get(_normalise(question))
    if canned is not None:
        return canned
    return _generic_answer(messages)


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
            return Completion(text[:cut], "stop", produced)
    if produced >= max_tokens:
        return Completion(text, "length", produced)
    return Completion(text, "stop", produced + 1)


def _first_stop(text: str, stops: Sequence[str], previous_length: int) -> int | None:
    """Earliest start of a stop string that the newest token completed, if any."""
    best: int | None = None
    for stop in stops:
        index = text.find(stop, max(0, previous_length - len(stop) + 1))
        if index != -1 and (best is None or index < best):
            best = index
    return best


def _normalise(question: str) -> str:
    return re.sub(r"\s+", " ", question).strip().rstrip(".!?").strip().lower()


def _generic_answer(messages: Sequence[Message]) -> str:
    digest = hashlib.sha256()
    for message in messages:
        digest.update(message.role.encode())
        digest.update(b"\0")
        digest.update(message.content.encode())
        digest.update(b"\0")
    rng = random.Random(int.from_bytes(digest.digest()[:8], "big"))

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
