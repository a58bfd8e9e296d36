"""Unsubscribe links: signed, expiring tokens; a small page; RFC 8058 one-click POST.

    GET  /functions/v1/email-notifications/unsubscribe?token=T   the page: confirm or choose
    POST /functions/v1/email-notifications/unsubscribe?token=T   `List-Unsubscribe=One-Click`
                                                                  unsubscribes at once; the
                                                                  page's form saves choices

The token names the user and the category and carries its expiry, signed with HMAC-SHA256
(EMAIL_UNSUBSCRIBE_SECRET, or a key generated once in the data folder). No cookie, no login:
the link in the mail is the authority. Transactional mail cannot be turned off here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
import urllib.parse

import aiohttp_jinja2
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from vibe.config import Settings
from vibe.email.keys import EMAIL_PAGES, EMAIL_UNSUBSCRIBE
from vibe.email.queue import set_preference
from vibe.keys import DB
from vibe.web.errors import ApiError

PATH = "/functions/v1/email-notifications/unsubscribe"
MANAGED = ("engagement",)


def unsubscribe_key(settings: Settings) -> bytes:
    """EMAIL_UNSUBSCRIBE_SECRET, or a key kept in the data folder (created once)."""
    if settings.email.unsubscribe_secret:
        return settings.email.unsubscribe_secret.encode()
    path = settings.data_dir / "email_unsubscribe_secret"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip().encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UnsubscribeLinks:
    def __init__(self, settings: Settings, key: bytes):
        self.settings = settings
        self.key = key
        self.ttl = settings.email.unsubscribe_ttl_days * 86400
        domain = settings.email.sender.rsplit("@", 1)[-1].strip(" >")
        self.mailto = settings.email.unsubscribe_mailto or f"unsubscribe@{domain}"

    def token(self, user_id: str, category: str, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.ttl)
        payload = _b64(f"{user_id}\n{category}\n{expires}".encode())
        return f"{payload}.{self._sign(payload)}"

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest()[:18])

    def verify(self, token: str, now: float | None = None) -> tuple[str, str]:
        """(user_id, category); raises ApiError 400 for a bad or expired token."""
        payload, _, signature = (token or "").partition(".")
        if not payload or not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            raise ApiError(400, "invalid_token", "This unsubscribe link is not valid.")
        try:
            user_id, category, expires = _unb64(payload).decode().split("\n")
            expired = int(expires) < (time.time() if now is None else now)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_token", "This unsubscribe link is not valid.") from None
        if expired:
            raise ApiError(400, "token_expired", "This unsubscribe link has expired; use the link in a newer email.")
        return user_id, category

    def url(self, user_id: str, category: str) -> str:
        return f"{self.settings.public_url}{PATH}?{urllib.parse.urlencode({'token': self.token(user_id, category)})}"

    def headers(self, user_id: str, category: str) -> dict[str, str]:
        """RFC 2369 / RFC 8058 headers for engagement mail."""
        return {
            "List-Unsubscribe": f"<{self.url(user_id, category)}>, <mailto:{self.mailto}?subject=unsubscribe>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }


async def _state(request: web.Request, user_id: str) -> dict[str, bool]:
    rows = await request.app[DB].fetchall(
        "SELECT category, subscribed FROM email_preferences WHERE user_id = %s", (user_id,)
    )
    chosen = {r["category"]: bool(r["subscribed"]) for r in rows}
    return {category: chosen.get(category, True) for category in MANAGED}


def _wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


async def _page(request: web.Request, user_id: str, category: str, message: str | None, status: int = 200):
    context = {"token": request.query.get("token", ""), "category": category, "message": message,
               "preferences": await _state(request, user_id), "action": PATH}
    return aiohttp_jinja2.render_template("unsubscribe.html", request, context, app_key=EMAIL_PAGES, status=status)


def _verify(request: web.Request) -> tuple[str, str]:
    user_id, category = request.app[EMAIL_UNSUBSCRIBE].verify(request.query.get("token", ""))
    if category not in MANAGED:
        raise ApiError(400, "invalid_token", "This unsubscribe link is not valid.")
    return user_id, category


def _refused(request: web.Request, exc: ApiError) -> web.Response:
    """A person in a browser gets the page with the reason; a program gets the JSON error."""
    if not _wants_html(request):
        raise exc
    return aiohttp_jinja2.render_template("unsubscribe.html", request, {"error": exc.message},
                                          app_key=EMAIL_PAGES, status=exc.status)


async def show(request: web.Request) -> web.Response:
    try:
        user_id, category = _verify(request)
    except ApiError as exc:
        return _refused(request, exc)
    return await _page(request, user_id, category, None)


async def post(request: web.Request) -> web.Response:
    try:
        user_id, category = _verify(request)
        form = await _form(request)
    except ApiError as exc:
        return _refused(request, exc)
    db = request.app[DB]
    if form.get("List-Unsubscribe") == "One-Click":
        async with db.transaction() as tx:
            await set_preference(tx, user_id, category, False, "one-click", time.time())
        return web.json_response({"unsubscribed": True, "category": category})
    choice = form.get("action")
    if choice not in ("unsubscribe", "save"):
        raise ApiError(400, "invalid_form", "expected List-Unsubscribe=One-Click, or action=unsubscribe|save")
    async with db.transaction() as tx:
        for name in MANAGED:
            keep = choice == "save" and form.get(name) == "on"
            await set_preference(tx, user_id, name, keep, "unsubscribe page", time.time())
    if not _wants_html(request):
        return web.json_response({"preferences": await _state(request, user_id)})
    return await _page(request, user_id, category, "Your choices are saved.")


async def _form(request: web.Request):
    """The posted form; a body that is not one (a broken multipart, an unknown charset) is 400."""
    try:
        return await request.post()
    except (ValueError, LookupError, RuntimeError, HttpProcessingError) as exc:  # what aiohttp's parsers raise
        raise ApiError(400, "invalid_form", f"The form cannot be read: {type(exc).__name__}: {exc}"[:300]) from None


def setup_routes(app: web.Application) -> None:
    app.router.add_get(PATH, show)
    app.router.add_post(PATH, post)
