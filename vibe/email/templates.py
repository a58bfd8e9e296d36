"""Email templates: what plugins register, how data is validated, and how mail is rendered.

A plugin's `register_email_templates(settings)` returns `EmailTemplate`s. Each names its files in
`templates/email/` (or its own `directory`): `NAME.subject.txt`, `NAME.html` and `NAME.txt`; the
HTML and text bodies usually extend the shared `_layout.html` / `_layout.txt`. HTML is
autoescaped; every variable a template uses must be given (StrictUndefined), so declared
optional fields are passed as None when absent.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping

import jinja2

from vibe.config import Settings
from vibe.paths import TEMPLATES_DIR
from vibe.plugins.host import PluginManager
from vibe.web.validation import Field, Problems, Shape

CATEGORIES = ("transactional", "engagement")
EMAIL_DIR = TEMPLATES_DIR / "email"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Currencies whose smallest unit is the unit itself (Stripe's list of zero-decimal currencies).
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
                "xaf", "xof", "xpf"}
SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥"}

Prepare = Callable[[Any, dict, dict, float], Awaitable[dict]]


class TemplateError(RuntimeError):
    """A template definition is invalid or two plugins registered the same name (start-up error)."""


@dataclasses.dataclass(frozen=True)
class EmailTemplate:
    """One kind of email. Its data: `data`, a dict of `Field`s (or a `Shape`), or the shorthand
    `required`/`optional`, mapping each field to its Python type(s). A null counts as not given;
    a field the template does not name is refused."""

    name: str
    category: str
    required: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    optional: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    sample: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    directory: Path | None = None
    # Looks up what is not given, at queueing time, in the queueing transaction:
    # `await prepare(tx, profile, data, now) -> data`.
    prepare: Prepare | None = None
    data: Shape | Mapping[str, Field] | None = None

    def __post_init__(self):
        fields = dict(self.data.fields if isinstance(self.data, Shape) else self.data or {})
        fields.update({k: _field(k, v, required=True) for k, v in self.required.items()})
        fields.update({k: _field(k, v, required=False) for k, v in self.optional.items() if k not in fields})
        fields = dict(sorted(fields.items(), key=lambda kv: not kv[1].required))  # the required first
        names = ", ".join(sorted(fields)) or "none"
        object.__setattr__(self, "data", Shape(fields, null_is_absent=True, unknown=f"not a field of {self.name} "
                                                                                    f"(fields: {names})"))

    def validate(self, data: Any) -> list[str]:
        """What is wrong with `data` for this template (empty when it is acceptable)."""
        if not isinstance(data, dict):
            return ["data: expected a JSON object"]
        problems = Problems()
        self.data.collect(data, problems, where="data")
        for key, value in data.items():
            if key in self.data.fields and isinstance(value, (dict, list)) and _unsendable(value):
                problems.add(f"data.{key}", "may not contain NUL characters or unpaired UTF-16 surrogates",
                             "unstorable")
        kinds = [p for p in problems.found if p.code != "value"]  # a wrong value is named once the kinds are right
        return [f"{p.field}: {_message(p.code, p.message)}" for p in (kinds or problems.found)]


def _message(code: str, message: str) -> str:
    if code == "required":
        return "required"
    return message.replace("must be ", "expected ", 1) if code == "type" else message


PY_KINDS = {str: "str", int: "int", float: "number", bool: "bool", dict: "object", list: "list"}


def _field(name: str, kind: Any, *, required: bool) -> Field:
    """The shorthand's Python type(s) as a Field (an `amount` and a `currency` are money)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = list(dict.fromkeys("number" if k is float or (k is int and float in kinds) else PY_KINDS[k]
                               for k in kinds))
    if name == "currency":
        return Field("|".join(names), required=required, pattern="[A-Za-z]{3}", strip=False,
                     message="expected a three-letter ISO code")
    if name == "amount" and names == ["int"]:
        return Field("int", required=required, minimum=0, message="must not be negative")
    return Field("|".join(names), required=required, strip=False)


def _unsendable(value: Any) -> bool:
    """True when a string in `value` holds what no mail can carry (NUL, a lone surrogate)."""
    if isinstance(value, str):
        return any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_unsendable(k) or _unsendable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unsendable(v) for v in value)
    return False


def collect_templates(pm: PluginManager, settings: Settings) -> dict[str, EmailTemplate]:
    """Every registered template by name; a duplicate or malformed definition raises TemplateError."""
    found: dict[str, EmailTemplate] = {}
    for _, result in pm.registered["register_email_templates"]:
        for template in _as_list(result):
            if not isinstance(template, EmailTemplate):
                raise TemplateError(f"register_email_templates returned {type(template).__name__}, not EmailTemplate")
            if not _NAME.match(template.name):
                raise TemplateError(f"email template name {template.name!r}: lower case letters, digits, _")
            if template.category not in CATEGORIES:
                raise TemplateError(f"email template {template.name}: category must be one of {CATEGORIES}")
            if template.name in found:
                raise TemplateError(f"two plugins register the email template {template.name!r}")
            found[template.name] = template
    return found


def _as_list(result: Any) -> Iterable[Any]:
    if result is None:
        return ()
    return result if isinstance(result, (list, tuple)) else (result,)


def format_money(amount: Any, currency: Any) -> str:
    """`2000, "usd"` -> `$20.00`; zero-decimal currencies have no cents."""
    code = str(currency or "").lower()
    value = int(amount or 0)
    text = f"{value:,}" if code in ZERO_DECIMAL else f"{value / 100:,.2f}"
    symbol = SYMBOLS.get(code)
    return f"{symbol}{text}" if symbol else f"{text} {code.upper()}".strip()


def format_date(value: Any) -> str:
    """Unix seconds or an ISO date -> `26 November 2026`."""
    if value is None or value == "":
        return ""
    if isinstance(value, (int, float)):
        when = datetime.datetime.fromtimestamp(float(value), datetime.timezone.utc)
    else:
        when = datetime.datetime.fromisoformat(str(value))
    return f"{when.day} {when:%B %Y}"


@dataclasses.dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


class EmailRenderer:
    """The Jinja2 environment over the templates' folders; one per app."""

    def __init__(self, templates: Mapping[str, EmailTemplate], settings: Settings):
        self.templates = dict(templates)
        self.settings = settings
        folders = [EMAIL_DIR] + sorted({t.directory for t in templates.values() if t.directory}, key=str)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(f) for f in folders]),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
            auto_reload=False,  # templates are read once; no stat() per render
        )
        self.env.filters.update(money=format_money, date=format_date)
        for template in self.templates.values():
            for suffix in ("subject.txt", "html", "txt"):
                try:
                    self.env.get_template(f"{template.name}.{suffix}")
                except jinja2.TemplateError as exc:
                    raise TemplateError(f"email template {template.name}: {template.name}.{suffix}: {exc}") from exc

    def context(self, template: EmailTemplate, data: Mapping[str, Any], *, recipient: Mapping[str, Any],
                unsubscribe_url: str | None = None) -> dict[str, Any]:
        values: dict[str, Any] = {key: None for key, field in template.data.fields.items() if not field.required}
        values.update(data)
        name = recipient.get("display_name") or recipient.get("full_name") or ""
        values.update(
            user={"name": name, "first_name": name.split()[0] if name.strip() else "", "email": recipient.get("email")},
            app_url=self.settings.public_url, category=template.category, unsubscribe_url=unsubscribe_url,
            product_name="Vibe Coding Bible",
        )
        return values

    def render(self, name: str, context: Mapping[str, Any]) -> Rendered:
        """Subject (one line), HTML and text; raises jinja2.TemplateError on a template fault."""
        subject = self.env.get_template(f"{name}.subject.txt").render(context)
        return Rendered(
            subject=" ".join(subject.split())[:250],
            html=self.env.get_template(f"{name}.html").render(context),
            text=self.env.get_template(f"{name}.txt").render(context),
        )
