"""Email templates: what plugins register, how data is validated, and how mail is rendered.

A plugin's `register_email_templates(settings)` returns `EmailTemplate`s. Each names its files:
`NAME.subject.txt`, `NAME.html` and `NAME.txt`, in each language's folder, `templates/email/de/`,
`templates/email/en/` (a plugin's own `directory` may hold `de/` and `en/` too, or the files
themselves, which then serve every language); the HTML and text bodies usually extend the
language's `_layout.html` / `_layout.txt`. A message is written in the recipient's language
(vibe.email.locales), and formats money, dates and numbers for it with Babel (the filters
`money`, `date`, `datetime`, `number`, `percent`, `week`). HTML is autoescaped; every variable a
template uses must be given (StrictUndefined), so declared optional fields are passed as None
when absent; data the template does not declare is passed too, escaped like the rest.

Links in data are checked, since autoescaping keeps a value inside its `href` but not out of
`javascript:`: a template's `urls` (and every string field named `*_url`) must be absolute
`https` URLs (`http` too in development) naming a host with no `user@` before it; its `paths`
(and every `*_path`) are paths in the app, one `/` first. Anything else is refused when queued,
and a stored value that fails (queued before the check) renders as no link.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping

import jinja2

from vibe.config import Settings
from vibe.email.locales import EMAIL_DIR, Formats, choose, languages
from vibe.plugins.host import PluginManager
from vibe.web.json_body import MAX_DEPTH, nesting_depth
from vibe.web.validation import Field, Problems, Shape

CATEGORIES = ("transactional", "engagement")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# What the renderer puts in every template's context; data keys of these names do not replace them.
CONTEXT_NAMES = ("user", "app_url", "category", "unsubscribe_url", "product_name", "lang")
# A subject is one line: runs of white space become one space, but for the no-break spaces Babel
# keeps an amount and its currency together with (49,00\u00a0€).
_BREAKS = re.compile(r"[^\S\u00a0\u202f\u2007]+")

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
    urls: tuple[str, ...] = ()  # data fields that are absolute links (besides those named *_url)
    paths: tuple[str, ...] = ()  # data fields that are paths appended to app_url (besides *_path)
    aliases: tuple[str, ...] = ()  # other names the API takes for it (the platform's: workshop_completed)
    preference: str | None = None  # the notification_preferences key that switches it off (payment_emails)

    def __post_init__(self):
        fields = dict(self.data.fields if isinstance(self.data, Shape) else self.data or {})
        fields.update({k: _field(k, v, required=True) for k, v in self.required.items()})
        fields.update({k: _field(k, v, required=False) for k, v in self.optional.items() if k not in fields})
        fields = dict(sorted(fields.items(), key=lambda kv: not kv[1].required))  # the required first
        names = ", ".join(sorted(fields)) or "none"
        object.__setattr__(self, "data", Shape(fields, null_is_absent=True, unknown=f"not a field of {self.name} "
                                                                                    f"(fields: {names})"))
        texts = [k for k, f in fields.items() if "str" in f.kind.split("|")]
        for kind, suffix in (("urls", "_url"), ("paths", "_path")):
            declared = tuple(getattr(self, kind))
            unknown = [k for k in declared if k not in texts]
            if unknown:
                raise TemplateError(f"email template {self.name}: {kind} names no string field: {', '.join(unknown)}")
            named = tuple(k for k in texts if k.endswith(suffix))
            object.__setattr__(self, kind, tuple(dict.fromkeys(declared + named)))

    def validate(self, data: Any, *, http: bool = False) -> list[str]:
        """What is wrong with `data` for this template (empty when it is acceptable); `http`:
        plain `http` links are accepted too (development: `allows_http`)."""
        if not isinstance(data, dict):
            return ["data: expected a JSON object"]
        if nesting_depth(data) > MAX_DEPTH:
            return [f"data: nests objects and arrays more than {MAX_DEPTH} deep"]
        problems = Problems()
        self.data.collect(data, problems, where="data")
        for key, problem in self.link_problems(data, http=http):
            problems.add(f"data.{key}", problem)
        for key, value in data.items():
            if key in self.data.fields and isinstance(value, (dict, list)) and _unsendable(value):
                problems.add(f"data.{key}", "may not contain NUL characters or unpaired UTF-16 surrogates",
                             "unstorable")
        kinds = [p for p in problems.found if p.code != "value"]  # a wrong value is named once the kinds are right
        return [f"{p.field}: {_message(p.code, p.message)}" for p in (kinds or problems.found)]


    def link_problems(self, data: Mapping[str, Any], *, http: bool) -> list[tuple[str, str]]:
        """(field, problem) for each link or path in `data` that may not become a link."""
        found = [(k, url_problem(data[k], http=http)) for k in self.urls if isinstance(data.get(k), str)]
        found += [(k, path_problem(data[k])) for k in self.paths if isinstance(data.get(k), str)]
        return [(k, problem) for k, problem in found if problem]


def allows_http(settings: Settings) -> bool:
    """Whether plain-http links are accepted in mail: in development only."""
    return settings.env == "development"


MAX_LINK = 2000
_NOT_IN_LINKS = re.compile(r"[\s\x00-\x1f\x7f-\x9f\\\ud800-\udfff]")


def url_problem(value: str, *, http: bool = False) -> str | None:
    """Why `value` may not be a link in a mail (None when it may): an absolute https URL (or
    http, when `http`) naming a host, without `user@` (`https://bank.example@evil.test/`)."""
    schemes = ("https", "http") if http else ("https",)
    expected = "must be an https URL" if not http else "must be an http or https URL"
    if len(value) > MAX_LINK:
        return f"must be at most {MAX_LINK} characters"
    if _NOT_IN_LINKS.search(value):
        return "may not contain spaces, control characters or backslashes"
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return expected
    if parts.scheme.lower() not in schemes or not parts.hostname:
        return expected
    if "@" in parts.netloc:
        return "may not name a user before the host (user@host)"
    return None


def path_problem(value: str) -> str | None:
    """Why `value` may not follow `app_url` in a link (None when it may): one `/` first, so the
    host stays the app's (`@evil.test` or `//evil.test` would not)."""
    if len(value) > MAX_LINK:
        return f"must be at most {MAX_LINK} characters"
    if _NOT_IN_LINKS.search(value):
        return "may not contain spaces, control characters or backslashes"
    if not value.startswith("/") or value.startswith("//"):
        return "must be a path in the app, starting with one /"
    return None


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


@dataclasses.dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str
    locale: str = ""  # the language it is written in (`de`, `en`)


class EmailRenderer:
    """A Jinja2 environment per language over the templates' folders; one renderer per app."""

    def __init__(self, templates: Mapping[str, EmailTemplate], settings: Settings):
        self.templates = dict(templates)
        self.settings = settings
        self.default_locale = settings.email.default_locale
        own = sorted({t.directory for t in templates.values() if t.directory}, key=str)
        self.envs = {language: self._environment(language, own) for language in languages()}
        for language, env in self.envs.items():
            for template in self.templates.values():
                for suffix in ("subject.txt", "html", "txt"):
                    try:
                        env.get_template(f"{template.name}.{suffix}")
                    except jinja2.TemplateError as exc:
                        raise TemplateError(f"email template {template.name}: {language}/{template.name}.{suffix}: "
                                            f"{exc}") from exc

    @staticmethod
    def _environment(language: str, own: list[Path]) -> jinja2.Environment:
        """The language's folder of each, then a plugin's own folder itself (its files serve every language)."""
        folders = [EMAIL_DIR / language] + [d / language for d in own] + own
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(f) for f in folders]),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
            auto_reload=False,  # templates are read once; no stat() per render
        )
        env.filters.update(Formats(language).filters())
        return env

    def context(self, template: EmailTemplate, data: Mapping[str, Any], *, recipient: Mapping[str, Any],
                unsubscribe_url: str | None = None, locale: str | None = None) -> dict[str, Any]:
        """What the template sees: its data (declared optional fields None when absent; other keys as
        given), the recipient, links, and `lang`: `locale` when given, else the recipient's
        profile's `locale`, else EMAIL_DEFAULT_LOCALE."""
        values: dict[str, Any] = {key: None for key, field in template.data.fields.items() if not field.required}
        values.update((key, value) for key, value in data.items() if key not in CONTEXT_NAMES)
        for key, _ in template.link_problems(values, http=allows_http(self.settings)):
            values[key] = None  # never a link: queued before links were checked
        name = recipient.get("display_name") or recipient.get("full_name") or ""
        values.update(
            user={"name": name, "first_name": name.split()[0] if name.strip() else "", "email": recipient.get("email")},
            app_url=self.settings.public_url, category=template.category, unsubscribe_url=unsubscribe_url,
            product_name="Vibe Coding Bible",
            lang=choose(locale, "") or choose(recipient.get("locale"), self.default_locale),
        )
        return values

    def render(self, name: str, context: Mapping[str, Any]) -> Rendered:
        """Subject (one line), HTML and text in the context's `lang`; raises jinja2.TemplateError on a
        template fault."""
        language = context.get("lang") if context.get("lang") in self.envs else self.default_locale
        env = self.envs[language]
        subject = env.get_template(f"{name}.subject.txt").render(context)
        return Rendered(
            subject=_BREAKS.sub(" ", subject).strip()[:250],
            html=env.get_template(f"{name}.html").render(context),
            text=env.get_template(f"{name}.txt").render(context),
            locale=language,
        )
