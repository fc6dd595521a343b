"""Exit statuses the command promises, and the one error that stops a run before any check.

Scripts and CI branch on the exit status, so each status means one thing: 1 is "the NIM
answered, and a required check failed"; 3 is "no check could say anything" (the NimService is
missing or not Ready, the API server refused us, the endpoint is unreachable).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class FatalError(Exception):
    """Ends the run with one line for the user instead of a traceback or a page of failures."""

    def __init__(self, message: str, exit_code: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ApiServerError(Exception):
    """The Kubernetes API server itself answered with an error (a Status object)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
