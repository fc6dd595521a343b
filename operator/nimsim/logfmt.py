"""NIM's container log line format, so simulated logs read like a real NIM's.

A NIM for LLMs logs ``LEVEL MM-DD HH:MM:SS.mmm file.py:line] message``, e.g.
``INFO 07-23 22:27:24.929 ngc_injector.py:141] Selected profile: 8835c3... (vllm-fp16-tp1)``
(real NIM 1.0 logs quoted in public KServe/NIM write-ups, e.g. the kserve
"nim" playground logs of ``ngc_injector.py``). Container logs are what a Job's
termination message and ``kubectl logs`` show, so the text matters.
"""

from __future__ import annotations

import time


def nim_log(level: str, source: str, line: int, message: str) -> str:
    now = time.time()
    stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(now))
    millis = int((now % 1) * 1000)
    return f"{level} {stamp}.{millis:03d} {source}:{line}] {message}"
