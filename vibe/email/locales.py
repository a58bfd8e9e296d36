"""The languages mail is written in, and Babel's formatting of money, dates and numbers for each.

Each language (`LANGUAGES` in vibe.email.settings) has a folder of templates,
`templates/email/<language>/` (`de/`, `en/`), with its own `_layout.html` / `_layout.txt`. A
message's language is the recipient profile's `locale` (a BCP 47 tag or a POSIX name: `de`,
`de-DE`, `en_GB`; only the language part counts) when vibe has templates in it, else
`EMAIL_DEFAULT_LOCALE`.

`Formats(language)` formats for one language, as the templates' filters:

    money(4900, "eur")      de: 49,00 €            en: €49.00   (amounts in the smallest unit)
    money(500, "jpy")       de: 500 ¥              en: ¥500
    date(1764115200)        de: 26. November 2025  en: November 26, 2025
    datetime(1764115200)    de: 26. November 2025, 00:00 UTC
    number(1234)            de: 1.234              en: 1,234
    percent(0.125)          de: 12,5 %             en: 12.5%
    week("2026-W48")        de: 23.–29. Nov. 2026  en: Nov 23 – 29, 2026

Times are Unix seconds or ISO 8601 strings, shown in UTC (which `datetime` says). Babel puts a
no-break space where a language keeps two parts together (`49,00\u00a0€`).
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import functools
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from babel import Locale
from babel import dates as babel_dates
from babel import numbers as babel_numbers

from vibe.email.settings import LANGUAGES, language_of
from vibe.paths import TEMPLATES_DIR
from vibe.web.times import to_seconds

EMAIL_DIR = TEMPLATES_DIR / "email"
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_CODE = re.compile(r"^[A-Za-z]{3}$")
# Where Stripe's amounts keep two decimals although the currency has none in CLDR (Stripe's
# "special cases": a charge of 5 ISK is `amount: 500`); everywhere else Babel's digits hold.
STRIPE_DIGITS = {"HUF": 2, "ISK": 2}
PRECISION = 5000  # significant digits: more than Python parses in a JSON integer (4,300) or a float has


def languages() -> tuple[str, ...]:
    """The languages vibe writes mail in."""
    return LANGUAGES


def choose(tag: Any, default: str) -> str:
    """The language of a message to someone whose profile says `tag`: its language, else `default`."""
    return language_of(tag) or default


def minor_digits(currency: str) -> int:
    """How many digits of an amount are below the unit: Babel's currency digits (JPY 0, EUR 2,
    KWD 3), as in Stripe's amounts, but for Stripe's two-decimal special cases."""
    code = currency.upper()
    return STRIPE_DIGITS.get(code, babel_numbers.get_currency_precision(code))


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    try:
        number = Decimal(value) if isinstance(value, (int, Decimal)) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"expected a number, got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _precise(method: Callable[..., str]) -> Callable[..., str]:
    """Run a formatter with room for every digit a JSON number can have (Decimal's default 28
    significant digits cannot round a 34-digit amount to cents); the cost is the digits present."""
    @functools.wraps(method)
    def run(self: Formats, value: Any, *args: Any) -> str:
        with decimal.localcontext() as context:
            context.prec = PRECISION
            try:
                return method(self, value, *args)
            except InvalidOperation:  # a string such as "1e99999"
                raise ValueError(f"{method.__name__}: {value!r} has too many digits to show") from None
    return run


def _moment(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(to_seconds(value), dt.timezone.utc)
    except ValueError:
        return None


class Formats:
    """Babel's formats for one language; `filters()` are the templates' filters."""

    def __init__(self, language: str):
        self.language = language
        self.locale = Locale.parse(language)
        self._percent = copy.copy(babel_numbers.parse_pattern(self.locale.percent_formats[None]))
        self._percent.frac_prec = (0, 2)  # 20 %, 12,5 %, 33,33 %

    @_precise
    def money(self, amount: Any, currency: Any) -> str:
        """An amount in the currency's smallest unit (as Stripe gives it), with the currency."""
        code = str(currency or "").strip()
        if not _CODE.match(code):
            raise ValueError(f"money: expected a three-letter currency code, got {currency!r}")
        value = _decimal(amount if amount is not None else 0).scaleb(-minor_digits(code))
        return babel_numbers.format_currency(value, code.upper(), locale=self.locale)

    def date(self, value: Any) -> str:
        """Unix seconds or an ISO 8601 time as a date (UTC); empty for none; as given when unreadable."""
        if value is None or value == "":
            return ""
        moment = _moment(value)
        return babel_dates.format_date(moment, "long", locale=self.locale) if moment else str(value)

    def datetime(self, value: Any) -> str:
        """Unix seconds or an ISO 8601 time as a date and a time of day, in UTC, saying so."""
        if value is None or value == "":
            return ""
        moment = _moment(value)
        if moment is None:
            return str(value)
        pattern = babel_dates.get_datetime_format("long", locale=self.locale)
        time = babel_dates.format_time(moment, "short", tzinfo=dt.timezone.utc, locale=self.locale)
        day = babel_dates.format_date(moment, "long", locale=self.locale)
        return pattern.replace("'", "").replace("{0}", f"{time} UTC").replace("{1}", day)

    @_precise
    def number(self, value: Any) -> str:
        """A count or a quantity with the language's separators (1.234 / 1,234)."""
        return babel_numbers.format_decimal(_decimal(value if value is not None else 0), locale=self.locale)

    @_precise
    def percent(self, value: Any) -> str:
        """A fraction as a percentage, at most two decimals (0.2 -> 20 %)."""
        return self._percent.apply(_decimal(value if value is not None else 0), self.locale)

    def week(self, value: Any) -> str:
        """An ISO week (`2026-W48`) as the span of its days; anything else as given."""
        match = _WEEK.match(str(value or ""))
        try:
            start = dt.date.fromisocalendar(int(match.group(1)), int(match.group(2)), 1) if match else None
        except ValueError:
            start = None
        if start is None:
            return "" if value is None else str(value)
        end = start + dt.timedelta(days=6)
        return babel_dates.format_interval(start, end, "yMMMd", locale=self.locale)

    def filters(self) -> dict[str, Callable[..., str]]:
        return {"money": self.money, "date": self.date, "datetime": self.datetime, "number": self.number,
                "percent": self.percent, "week": self.week}
