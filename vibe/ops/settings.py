"""Operations' settings: the watchdog and its alerts, the dashboard, error reporting."""

from __future__ import annotations

import dataclasses
import re

from vibe.variables import fraction, setting, url_problem

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _email(value: str, production: bool) -> str:
    return "" if EMAIL.match(value) else "expected an email address"


def _dashboard_password(value: str, production: bool) -> str:
    return "at least 12 characters in production" if production and len(value) < 12 else ""


@dataclasses.dataclass(frozen=True)
class OpsSettings:
    CONCERN = "ops"

    admin_email: str = setting("ADMIN_EMAIL", "", "the operator's address, for alerts that need a person",
                               production=True, check=_email)
    alert_webhook: str = setting("ALERT_WEBHOOK", "", "where alerts are posted (JSON with a Slack-compatible "
                                 "`text`); none: no watchdog", check=url_problem, hint="no alerts are sent")
    alert_check_seconds: float = setting("ALERT_CHECK_SECONDS", 30.0, "how often the watchdog checks",
                                         minimum=0.01)
    alert_p95_seconds: float = setting("ALERT_P95_SECONDS", 5.0, "p95 latency that raises an alert",
                                       minimum=0.001)
    alert_error_rate: float = setting("ALERT_ERROR_RATE", 0.05, "share of 5xx answers that raises an alert",
                                      parse=fraction)
    alert_min_requests: int = setting("ALERT_MIN_REQUESTS", 20, "traffic needed for the latency and error "
                                      "alerts", minimum=1)
    alert_window_seconds: float = setting("ALERT_WINDOW_SECONDS", 300.0, "the window of the latency and error "
                                          "alerts", minimum=60.0)
    alert_cooldown_seconds: float = setting("ALERT_COOLDOWN_SECONDS", 900.0, "quiet time after an alert",
                                            minimum=0)
    alert_timeout_seconds: float = setting("ALERT_TIMEOUT_SECONDS", 5.0, "how long an alert's post may take",
                                           minimum=0.1)
    check_interval: int = setting("CHECK_INTERVAL", 60, "seconds between the monitor's checks (`vibe monitor`)",
                                  minimum=1)
    dashboard_password: str = setting("DASHBOARD_PASSWORD", "", "Basic-auth password for the dashboard",
                                      secret=True, check=_dashboard_password,
                                      hint="the dashboard takes admin tokens only")
    dashboard_refresh_seconds: int = setting("DASHBOARD_REFRESH_SECONDS", 30, "the dashboard's self-refresh",
                                             minimum=5)
    sentry_dsn: str = setting("SENTRY_DSN", "", "sends errors to Sentry (`pip install -e '.[sentry]'`)",
                              credentials=True, check=lambda value, production: url_problem(value, False),
                              hint="errors are only logged")
