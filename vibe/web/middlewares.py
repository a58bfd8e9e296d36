"""Request id and JSON errors: the outermost layers every request passes through."""

from __future__ import annotations

import logging
import re
import uuid

from aiohttp import web

from vibe.db.database import DatabaseUnavailable
from vibe.keys import REQUEST_ID
from vibe.ops.logs import current_request_id
from vibe.web.errors import HTTP_CODES, ApiError, error_response

log = logging.getLogger("vibe.http")

_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_of(request: web.Request) -> str | None:
    return request.get(REQUEST_ID)


@web.middleware
async def request_id_middleware(request: web.Request, handler):
    incoming = request.headers.get("X-Request-ID", "")
    rid = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = rid
    token = current_request_id.set(rid)  # every log line of this request carries it
    try:
        response = await handler(request)
    finally:
        current_request_id.reset(token)
    response.headers["X-Request-ID"] = rid
    return response


@web.middleware
async def error_middleware(request: web.Request, handler):
    rid = request_id_of(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, rid, details=exc.details, headers=exc.headers)
    except DatabaseUnavailable as exc:
        log.warning("database unavailable during %s %s: %s", request.method, request.path, exc)
        return error_response(
            503, "database_unavailable", "The database is not reachable; retry later.", rid,
            headers={"Retry-After": "5"},
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, f"http_{exc.status}")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, code, exc.reason, rid, headers=headers)
    except Exception:
        log.exception("unhandled error on %s %s (request %s)", request.method, request.path, rid)
        return error_response(500, "internal_error", "Something went wrong on our side.", rid)
