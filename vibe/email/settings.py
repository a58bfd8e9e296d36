"""Email's settings: the sender, the language, the queue and worker, Resend's webhooks,
unsubscribe links and the schedule."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from vibe.variables import ConfigError, Env, setting, url_problem

BACKENDS = ("outbox", "resend", "smtp")
# The languages vibe writes mail in: each has a folder templates/email/<language>/ (vibe.email.locales).
LANGUAGES = ("de", "en")
_TAG = re.compile(r"^\s*([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*(?:\.[\w-]+)?(?:@\w+)?\s*$")


def language_of(tag: Any) -> str | None:
    """The language of a BCP 47 tag or POSIX locale name when vibe writes mail in it (`de-DE` ->
    `de`, `en_GB` -> `en`, `de_CH.UTF-8` -> `de`), else None."""
    match = _TAG.match(tag) if isinstance(tag, str) else None
    language = match.group(1).lower() if match else None
    return language if language in LANGUAGES else None


def _language(raw: str) -> str:
    language = language_of(raw)
    if language is None:
        raise ConfigError(f"expected a language vibe has email templates for ({', '.join(LANGUAGES)}), got {raw!r}")
    return language


def _smtp_url(raw: str) -> str:
    if not raw.startswith(("smtp://", "smtps://")):
        raise ConfigError("expected smtp://[user:password@]host[:port] or smtps://...")
    return raw


def _sender(raw: str) -> str:
    if "@" not in raw:
        raise ConfigError(f"expected an address such as 'Vibe <no-reply@example.com>', got {raw!r}")
    return raw


def _resend_url_given(env: Env) -> bool:
    return bool(env.get("EMAIL_SERVICE_URL", "").strip())


@dataclasses.dataclass(frozen=True)
class EmailSettings:
    CONCERN = "email"

    backend: str = setting("EMAIL_BACKEND", "outbox", "`outbox` (files in `$VIBE_DATA_DIR/outbox`), `resend` or "
                           "`smtp`", choices=BACKENDS)
    sender: str = setting("EMAIL_FROM", "Vibe Coding Bible <no-reply@localhost>", "the From address",
                          parse=_sender)
    default_locale: str = setting("EMAIL_DEFAULT_LOCALE", "de", "the language of mail whose recipient's profile "
                                  "names none vibe writes (`de` or `en`; a tag such as `de-DE` counts as `de`)",
                                  parse=_language)
    service_url: str = setting("EMAIL_SERVICE_URL", "", "Resend API base (for `resend`)", check=url_problem,
                               hint="email goes to the local outbox folder")
    service_key: str = setting("EMAIL_SERVICE_KEY", "", "Resend API key (for `resend`)", secret=True,
                               production=_resend_url_given)
    smtp_url: str = setting("EMAIL_SMTP_URL", "", "`smtp://user:pass@host:587` (STARTTLS) or `smtps://host:465`",
                            parse=_smtp_url, credentials=True)
    webhook_secret: str = setting("EMAIL_WEBHOOK_SECRET", "", "Svix secret of Resend's webhooks", secret=True)
    webhook_tolerance: int = setting("EMAIL_WEBHOOK_TOLERANCE", 300, "allowed timestamp skew of Resend's webhooks "
                                     "(seconds)", minimum=1)
    unsubscribe_secret: str = setting("EMAIL_UNSUBSCRIBE_SECRET", "", "signs unsubscribe links (set it when "
                                      "several instances run)", secret=True,
                                      default_text="generated in the data folder")
    unsubscribe_ttl_days: int = setting("EMAIL_UNSUBSCRIBE_TTL_DAYS", 60, "how long an unsubscribe link works",
                                        minimum=1)
    unsubscribe_mailto: str = setting("EMAIL_UNSUBSCRIBE_MAILTO", "", "the mailto in `List-Unsubscribe`",
                                      default_text="`unsubscribe@<From domain>`")
    max_attempts: int = setting("EMAIL_MAX_ATTEMPTS", 8, "attempts before a message is dead", minimum=1)
    retry_base_seconds: float = setting("EMAIL_RETRY_BASE_SECONDS", 2.0, "first retry delay (exponential backoff)",
                                        minimum=0)
    retry_max_seconds: float = setting("EMAIL_RETRY_MAX_SECONDS", 3600.0, "longest retry delay", minimum=0)
    concurrency: int = setting("EMAIL_CONCURRENCY", 8, "sends at once", minimum=1)
    poll_seconds: float = setting("EMAIL_POLL_SECONDS", 1.0, "how often the worker looks for due retries",
                                  minimum=0.01)
    send_timeout_seconds: float = setting("EMAIL_SEND_TIMEOUT_SECONDS", 30.0, "limit for one send", minimum=0.1)
    lease_seconds: float = setting("EMAIL_SENDING_LEASE_SECONDS", 300.0, "after this lease a message stuck in "
                                   "`sending` is claimed again", minimum=1.0)
    breaker_threshold: int = setting("EMAIL_BREAKER_THRESHOLD", 5, "failures that open the sender's breaker",
                                     minimum=1)
    breaker_reset_seconds: float = setting("EMAIL_BREAKER_RESET_SECONDS", 30.0, "seconds before an open breaker "
                                           "probes", minimum=0.01)
    worker: bool = setting("VIBE_EMAIL_WORKER", True, "run the email worker in this instance")
    scheduler: bool = setting("VIBE_EMAIL_SCHEDULER", True, "run the email scheduler in this instance")
    schedule_seconds: float = setting("EMAIL_SCHEDULE_SECONDS", 3600.0, "seconds between scheduler passes",
                                      minimum=0.05)
    expiring_days: int = setting("EMAIL_EXPIRING_DAYS", 3, "days before period end for the reminder", minimum=1)

    def __post_init__(self) -> None:
        if self.backend == "smtp" and not self.smtp_url:
            raise ConfigError("EMAIL_SMTP_URL: required when EMAIL_BACKEND=smtp")
        if self.backend == "resend" and not (self.service_url and self.service_key):
            raise ConfigError("EMAIL_SERVICE_KEY: EMAIL_SERVICE_URL and EMAIL_SERVICE_KEY are required when "
                              "EMAIL_BACKEND=resend")
