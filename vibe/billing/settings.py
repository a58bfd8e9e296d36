"""Billing's settings: the Stripe account, its webhooks, and how events are processed."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from vibe.variables import ConfigError, base_url, setting

TIERS = ("free", "starter", "pro", "expert")
LIVEMODES = ("any", "live", "test")
INTERVALS = ("monthly", "yearly")
STRIPE_KEY = re.compile(r"^(sk|rk)_(live|test)_[A-Za-z0-9]{16,}$")
WEBHOOK_SECRET = re.compile(r"^whsec_[A-Za-z0-9+/=_-]{16,}$")


def _price_tiers(raw: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",") if part.strip()):
        key, sep, tier = item.partition("=")
        tier = tier.strip().lower()
        if not sep or not key.strip() or tier not in TIERS:
            raise ConfigError(f"expected price_or_product_id=tier with tier in {', '.join(TIERS)}, got {item!r}")
        mapping[key.strip()] = tier
    return mapping


def _prices(raw: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",") if part.strip()):
        key, sep, price = (x.strip() for x in item.partition("="))
        tier, _, interval = key.lower().partition("_")
        if not sep or tier not in TIERS or interval not in INTERVALS or not price:
            raise ConfigError(f"expected tier_interval=price_id (interval one of {', '.join(INTERVALS)}), got {item!r}")
        mapping[key.lower()] = price
    return mapping


def _stripe_key(value: str, production: bool) -> str:
    m = STRIPE_KEY.match(value)
    if not m:
        return "expected sk_live_… or sk_test_… (or a restricted rk_ key)"
    if production and m.group(2) != "live":
        return "a test key in production: use sk_live_…"
    return ""


def _webhook_secrets(value: str, production: bool) -> str:
    bad = [s for s in (p.strip() for p in value.split(",")) if s and not WEBHOOK_SECRET.match(s)]
    return "expected whsec_… (comma-separated for rotation)" if bad else ""


@dataclasses.dataclass(frozen=True)
class BillingSettings:
    CONCERN = "billing"

    secret_key: str = setting("STRIPE_SECRET_KEY", "", "the Stripe API key (`sk_live_…`, `sk_test_…` or `rk_…`); "
                              "without it catch-up, reconcile, checkout and portal are off",
                              secret=True, production=True, check=_stripe_key,
                              hint="off without it: catch-up, reconcile, checkout, portal, plan changes in Stripe")
    api_base: str = setting("STRIPE_API_BASE", "https://api.stripe.com", "where vibe calls Stripe's API "
                            "(an emulator's address in tests)", parse=base_url)
    network_retries: int = setting("STRIPE_NETWORK_RETRIES", 2, "retries of a Stripe call that failed on the "
                                   "network or with a 409/5xx (same idempotency key)", minimum=0, maximum=10)
    api_timeout_seconds: float = setting("STRIPE_API_TIMEOUT_SECONDS", 30.0, "one Stripe call's timeout",
                                         minimum=0.1)
    catchup_seconds: float = setting("STRIPE_CATCHUP_SECONDS", 3600.0, "how often the service lists Stripe's "
                                     "events it may have missed (at start-up, then every so often; 0: never)",
                                     minimum=0)
    catchup_types: tuple[str, ...] = setting("STRIPE_CATCHUP_TYPES", (), "event types catch-up lists",
                                             default_text="the types vibe handles")
    prices: Mapping[str, str] = setting(
        "STRIPE_PRICES", {}, "`tier_interval=price_…,...` (`pro_monthly=price_…`): the price a checkout of a tier "
        "uses; else the price whose lookup key is `tier_interval`", parse=_prices)
    proration_behavior: str = setting("STRIPE_PRORATION_BEHAVIOR", "create_prorations", "how a plan change "
                                      "through update_subscription is prorated",
                                      choices=("create_prorations", "always_invoice", "none"))
    webhook_secrets: tuple[str, ...] = setting(
        "STRIPE_WEBHOOK_SECRET", (), "`whsec_...`; several, comma-separated, for rotation or several endpoints",
        secret=True, default_text="generated", production=True, check=_webhook_secrets,
        hint="generated and kept in VIBE_DATA_DIR when unset")
    webhook_tolerance: int = setting("STRIPE_WEBHOOK_TOLERANCE", 300, "seconds a signature's timestamp may be off",
                                     minimum=1)
    livemode: str = setting("STRIPE_LIVEMODE", "any", "`live` or `test`: store but skip events of the other mode",
                            choices=LIVEMODES)
    price_tiers: Mapping[str, str] = setting(
        "STRIPE_PRICE_TIERS", {}, "`price_or_product_id=tier,...` for prices without `metadata.tier` or a tier "
        "`lookup_key`", parse=_price_tiers)
    max_attempts: int = setting("STRIPE_MAX_ATTEMPTS", 8, "failed attempts before an event is dead-lettered",
                                minimum=1)
    retry_base_seconds: float = setting("STRIPE_RETRY_BASE_SECONDS", 2.0,
                                        "first retry delay (exponential backoff, full jitter)", minimum=0)
    retry_max_seconds: float = setting("STRIPE_RETRY_MAX_SECONDS", 3600.0, "longest retry delay", minimum=0)
    wait_timeout_seconds: float = setting("STRIPE_WAIT_TIMEOUT_SECONDS", 7 * 86400.0,
                                          "how long an event may wait for its customer's link", minimum=0)
    poll_seconds: float = setting("STRIPE_POLL_SECONDS", 1.0, "how often the dispatcher looks for due retries",
                                  minimum=0.01)
    extra_event_types: tuple[str, ...] = setting(
        "STRIPE_EXTRA_EVENT_TYPES", (), "event types newer than the installed stripe library, for plugins")
    worker: bool = setting("VIBE_STRIPE_WORKER", True,
                           "`false`: store events but leave processing to other instances")
    dispatch_concurrency: int = setting(
        "STRIPE_DISPATCH_CONCURRENCY", 0, "dispatcher loops in one process (PostgreSQL: more share a backlog, "
        "each taking the next full batch)", minimum=0, default_text="1")
    failing_batches: int = setting(
        "STRIPE_FAILING_BATCHES", 3, "dispatcher batches failed in a row after which `/health` says degraded "
        "(and the alert watchdog fires)", minimum=1)
    due_age_seconds: float = setting(
        "STRIPE_DUE_AGE_SECONDS", 300.0, "`/health` says degraded when the oldest due event has waited longer "
        "(and the alert watchdog fires)", minimum=1)
    referral_commission_rate: float = setting(
        "REFERRAL_COMMISSION_RATE", 0.20, "share of a referred user's payment paid to the referrer",
        minimum=0, maximum=1)
