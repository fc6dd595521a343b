"""OpenAI-style error objects, the shape NIM clients parse on failure.

Handlers raise :class:`ApiError` and a middleware renders it, so every failure
path, including aiohttp's own 404/405/413, reaches the client in one shape:
``{"error": {"message", "type", "code"[, "param"]}}``.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

INVALID_REQUEST = "invalid_request_error"


class ApiError(Exception):
    """An error response waiting to be sent.

    ``param`` appears in the body only for request-validation errors (400),
    where it names the offending field; NIM's other errors, such as the 404 for
    an unknown model, carry just message, type and code.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        error_type: str = INVALID_REQUEST,
        param: str | None = None,
        include_param: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.error_type = error_type
        self.param = param
        self.include_param = include_param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, dict[str, str | None]]:
        error: dict[str, str | None] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        if self.include_param:
            error["param"] = self.param
        return {"error": error}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)


def invalid_request(message: str, *, code: str, param: str | None) -> ApiError:
    """A 400 for a request the client must change before retrying."""
    return ApiError(400, message, code=code, param=param, include_param=True)
