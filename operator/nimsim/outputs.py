"""What the simulated model generates for a request: one output per choice, and their cost.

Pure functions of the validated request, so the JSON and the streamed
responses of one request agree and tests can check the rules directly:

- ``n`` choices per prompt; choice ``i > 0`` is a different variant of the
  generic answer (sampling at a non-zero temperature differs between choices).
- ``tool_choice`` naming a function, or ``required``, answers with a call to
  it; ``auto`` calls a tool the user's last message names
  (:func:`nimsim.generate.tool_to_call`). As in vLLM's ``serving_chat.py`` a
  tool-call message has ``content: ""``; ``finish_reason`` is ``tool_calls``
  for ``auto``/``required`` and the engine's own reason for a named function.
- ``response_format`` ``json_object``/``json_schema`` answers with JSON.
- ``stop_reason`` is vLLM's: the stop string that ended the output, the end
  token id for a natural end (128009, Llama 3's ``<|eot_id|>``, as a real
  Llama NIM reports), or null when cut by length.
- Prompt tokens: the chat template's per-message overhead (:mod:`nimsim.tokens`)
  plus the tool definitions, which a chat template renders into the prompt.
- Logprobs are deterministic stand-ins: the chosen token is always the most
  likely of its ``top_logprobs``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nimsim.errors import invalid_request
from nimsim.generate import (
    Completion,
    complete,
    json_answer,
    natural_answer,
    tool_arguments,
    tool_to_call,
)
from nimsim.schema import ChatRequest, CompletionRequest, Message, Tool, ToolCall
from nimsim.tokens import count_prompt_tokens, count_tokens, tokenize

LLAMA_END_OF_TURN = 128009
_ALTERNATIVES = (" the", " a", ",", ".", " and", " of", " to", " in", " is", " it", "\n", " that",
                 " for", " on", " with", " as", " this", " be", " at", " by")  # fmt: skip


@dataclass(frozen=True)
class Output:
    """One choice: its visible text (or a tool call) and how generation ended."""

    index: int
    text: str
    pieces: tuple[str, ...]
    """``text`` split into the tokens that are streamed, one per chunk."""
    finish_reason: str
    stop_reason: int | str | None
    completion_tokens: int
    tool_call: ToolCall | None = None


def chat_prompt_tokens(chat: ChatRequest) -> int:
    texts = [m.content + "".join(c.name + c.arguments for c in m.tool_calls) for m in chat.messages]
    tools = sum(count_tokens(json.dumps(_tool_json(t))) for t in chat.tools)
    return count_prompt_tokens(texts) + tools


def completion_prompt_tokens(request: CompletionRequest, index: int) -> int:
    """Tokens of one prompt; text prompts gain the BOS token vLLM adds to completions."""
    given = request.prompt_token_counts[index]
    return given if given is not None else count_tokens(request.prompts[index]) + 1


def budget(prompt_tokens: int, max_tokens: int | None, context: int, prompt_param: str) -> int:
    """How many tokens may be generated; rejects requests that cannot fit the context."""
    if max_tokens is None:
        if prompt_tokens >= context:
            raise invalid_request(
                f"This model's maximum context length is {context} tokens. However, your "
                f"messages resulted in {prompt_tokens} tokens. Please reduce the length of "
                "the messages.",
                code="context_length_exceeded",
                param=prompt_param,
            )
        return context - prompt_tokens
    if prompt_tokens + max_tokens > context:
        raise invalid_request(
            f"This model's maximum context length is {context} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
            f"{max_tokens} in the completion). Please reduce the length of the messages or "
            "completion.",
            code="context_length_exceeded",
            param="max_tokens",
        )
    return max_tokens


def chat_outputs(
    chat: ChatRequest, limit: int, model: str, variant_offset: int = 0
) -> list[Output]:
    """The ``n`` choices of a chat completion, each within ``limit`` generated tokens."""
    outputs: list[Output] = []
    for index in range(chat.sampling.n):
        tool, reason = _tool_for(chat)
        if tool is not None:
            arguments = tool_arguments(tool, chat.messages)
            done = complete(arguments, limit)
            finish = reason if done.finish_reason == "stop" else done.finish_reason
            call = ToolCall(f"chatcmpl-tool-{uuid.uuid4().hex}", tool.name, done.content)
            outputs.append(_output(index, done, model, finish=finish, tool_call=call))
            continue
        text = _chat_text(chat, index + variant_offset)
        outputs.append(_output(index, complete(text, limit, chat.sampling.stop), model))
    return outputs


def completion_outputs(
    request: CompletionRequest, limits: Sequence[int], model: str
) -> list[Output]:
    """Choices for every prompt: ``n`` per prompt, indexed prompt by prompt."""
    outputs: list[Output] = []
    n = request.sampling.n
    for number, prompt in enumerate(request.prompts):
        messages = (Message("user", prompt),)
        for variant in range(n):
            if _wants_json(request.sampling.response_format):
                text = json_answer(_schema(request.sampling.response_format), messages)
            else:
                text = natural_answer(messages, variant)
                if prompt and not prompt[-1].isspace():
                    text = " " + text  # a continuation, not a new line of the prompt
            done = complete(text, limits[number], request.sampling.stop)
            outputs.append(_output(number * n + variant, done, model))
    return outputs


def _chat_text(chat: ChatRequest, variant: int) -> str:
    if _wants_json(chat.sampling.response_format):
        return json_answer(_schema(chat.sampling.response_format), chat.messages)
    return natural_answer(chat.messages, variant)


def _tool_for(chat: ChatRequest) -> tuple[Tool | None, str]:
    if not chat.tools or chat.tool_choice == "none":
        return None, "stop"
    if chat.tool_choice == "auto":
        return tool_to_call(chat.messages, chat.tools), "tool_calls"
    if chat.tool_choice == "required":
        return tool_to_call(chat.messages, chat.tools) or chat.tools[0], "tool_calls"
    named = next(t for t in chat.tools if t.name == chat.tool_choice)
    return named, "stop"


def _wants_json(response_format: object) -> bool:
    kind = getattr(response_format, "type", "text")
    return kind in ("json_object", "json_schema")


def _schema(response_format: object) -> Any:
    return getattr(response_format, "schema", None)


def _output(
    index: int,
    done: Completion,
    model: str,
    *,
    finish: str | None = None,
    tool_call: ToolCall | None = None,
) -> Output:
    stop_reason: int | str | None = None
    if done.finish_reason == "stop":
        if done.stop_string is not None:
            stop_reason = done.stop_string
        elif "llama" in model.lower():
            stop_reason = LLAMA_END_OF_TURN
    return Output(
        index=index,
        text="" if tool_call is not None else done.content,
        pieces=tuple(tokenize(done.content)),
        finish_reason=finish or done.finish_reason,
        stop_reason=stop_reason,
        completion_tokens=done.completion_tokens,
        tool_call=tool_call,
    )


def _tool_json(tool: Tool) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "parameters": tool.parameters}


# -- logprobs ------------------------------------------------------------------------------


def _logprob(token: str, rank: int) -> float:
    digest = hashlib.sha256(token.encode()).digest()
    base = -(digest[0] / 255.0) * 0.5
    return round(base - 1.5 * rank, 4)


def chat_logprobs(pieces: Sequence[str], top: int) -> list[dict[str, Any]]:
    """``choices[].logprobs.content`` entries for the given tokens."""
    entries: list[dict[str, Any]] = []
    for piece in pieces:
        chosen = _logprob(piece, 0)
        alternatives = [a for a in _ALTERNATIVES if a != piece][: max(top - 1, 0)]
        tops = [{"token": piece, "logprob": chosen, "bytes": list(piece.encode())}] if top else []
        tops += [
            {"token": alt, "logprob": _logprob(alt, rank + 1), "bytes": list(alt.encode())}
            for rank, alt in enumerate(alternatives)
        ]
        entries.append(
            {"token": piece, "logprob": chosen, "bytes": list(piece.encode()), "top_logprobs": tops}
        )
    return entries


def completion_logprobs(
    pieces: Sequence[str], top: int, offset: int = 0, prompt_pieces: Sequence[str] = ()
) -> dict[str, Any]:
    """The legacy ``logprobs`` object of ``/v1/completions`` (prompt tokens first under echo)."""
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []
    position = offset
    for number, piece in enumerate(prompt_pieces):
        tokens.append(piece)
        token_logprobs.append(None if number == 0 else _logprob(piece, 0))
        top_logprobs.append(None if number == 0 else _top_map(piece, top))
        text_offset.append(position)
        position += len(piece)
    for piece in pieces:
        tokens.append(piece)
        token_logprobs.append(_logprob(piece, 0))
        top_logprobs.append(_top_map(piece, top))
        text_offset.append(position)
        position += len(piece)
    return {
        "text_offset": text_offset,
        "token_logprobs": token_logprobs,
        "tokens": tokens,
        "top_logprobs": top_logprobs,
    }


def _top_map(piece: str, top: int) -> dict[str, float]:
    if top <= 0:
        return {}
    result = {piece: _logprob(piece, 0)}
    for rank, alt in enumerate(a for a in _ALTERNATIVES if a != piece):
        if len(result) >= top:
            break
        result[alt] = _logprob(alt, rank + 1)
    return result
