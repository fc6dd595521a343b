"""What the kubelet reports as a terminated container's message, and how much of it.

A Job's outcome is often read from `state.terminated.message`, so the lab must produce it by
the kubelet's rules, limits included (kubernetes/kubernetes v1.36):

- the file at `terminationMessagePath` is read from its end, at most 4096 bytes
  (`tail.ReadAtMost(path, MaxContainerTerminationMessageLength)` in
  pkg/kubelet/kuberuntime/kuberuntime_container.go, `getTerminationMessage`);
- with `terminationMessagePolicy: FallbackToLogsOnError`, a container that exited non-zero and
  left the file empty (or absent) gets the tail of its log instead: the last 80 lines, of which
  the last 2048 bytes (`readLastStringFromContainerLogs`: TailLines=80 into a 2048-byte circular
  buffer; constants in pkg/kubelet/container/runtime.go);
- across a pod, each container's message is cut to 12288 bytes divided by the number of
  containers and init containers, keeping its head (`normalizeStatus` in
  pkg/kubelet/status/status_manager.go, `MaxPodTerminationMessageLogLength`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_MESSAGE_BYTES = 4 * 1024
MAX_LOG_LINES = 80
MAX_LOG_BYTES = 2 * 1024
MAX_POD_MESSAGE_BYTES = 12 * 1024
DEFAULT_PATH = "/dev/termination-log"
FALLBACK_TO_LOGS = "FallbackToLogsOnError"


def _decode(data: bytes) -> str:
    """Go converts bytes to a string as they are; invalid UTF-8 cannot go into JSON here."""
    return data.decode("utf-8", errors="replace")


def tail_bytes(data: bytes, limit: int) -> bytes:
    return data[-limit:] if len(data) > limit else data


def read_message_file(path: Path) -> str | None:
    """The file's last 4096 bytes, or None if there is no such file (which falls back to logs)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - MAX_MESSAGE_BYTES))
            return _decode(handle.read())
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"Error on reading termination log {path}: {err}"


def message_from_logs(lines: Sequence[str]) -> str:
    """The log's last 80 lines, then the last 2048 bytes of those."""
    text = "".join(f"{line}\n" for line in lines[-MAX_LOG_LINES:])
    return _decode(tail_bytes(text.encode(), MAX_LOG_BYTES))


def termination_message(
    policy: str | None, exit_code: int, file_text: str | None, log_lines: Sequence[str]
) -> str:
    """The message the kubelet derives from a container's file and, on failure, its log."""
    fallback = policy == FALLBACK_TO_LOGS and exit_code != 0
    if file_text:
        return file_text
    return message_from_logs(log_lines) if fallback else ""


def pod_message_budget(pod_spec: dict[str, Any]) -> int:
    """Bytes each container's message may keep in the pod's status."""
    containers = len(pod_spec.get("containers") or []) + len(pod_spec.get("initContainers") or [])
    return MAX_POD_MESSAGE_BYTES // containers if containers else MAX_POD_MESSAGE_BYTES


def truncate_head(message: str, limit: int) -> str:
    data = message.encode()
    if len(data) <= limit:
        return message
    return data[:limit].decode("utf-8", errors="ignore")
