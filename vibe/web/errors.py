"""API errors: every error response is `{"error": {"code", "message", "request_id", ...}, "message"}`.

`error` is vibe's own shape; the top-level `message` (the same text as `error.message`) is what
the Edge Functions' callers read (they answered `{"error": "<short>", "message": "<detail>"}`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


class ApiError(Exception):
    """Raise from a handler to answer with a JSON error of a stable `code`."""

    def __init__(self, status: int, code: str, message: str, *, details: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, request_id: str | None, *,
                   details: Any = None, headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details is not None:
        body["details"] = details
    return web.json_response({"error": body, "message": message}, status=status, headers=headers)


# Codes for aiohttp's own HTTP exceptions (routing, body size, methods).
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}
