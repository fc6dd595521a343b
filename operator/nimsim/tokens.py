"""A tokenizer stand-in that is cheap, deterministic and lossless.

The simulator has no vocabulary, but clients still see token counts in
``usage``, truncation by ``max_tokens`` and context-length errors, and those
must agree with each other. Every count in the simulator goes through this
module so they do.

The approximation: a token is a run of up to 10 word characters, or a single
other non-space character, each carrying the whitespace in front of it (as
BPE tokenizers attach the leading space to the word). Trailing whitespace forms
its own token. Joining the tokens of a text gives the text back, which is what
lets streaming send one token per chunk and still reproduce the full answer.

Prompts are charged a fixed overhead per message plus a few tokens priming the
assistant's turn, mirroring the header tokens a Llama 3 chat template wraps
around each message; with these numbers "What is the capital of France?" costs
15 prompt tokens, as in the NIM API reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 4

_TOKEN = re.compile(r"\s*(?:\w{1,10}|[^\w\s])|\s+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return len(tokenize(text))


def count_prompt_tokens(contents: Iterable[str]) -> int:
    """Token cost of a chat prompt whose messages have the given contents."""
    return REPLY_PRIMING + sum(MESSAGE_OVERHEAD + count_tokens(text) for text in contents)
