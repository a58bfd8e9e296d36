"""How a setting is declared: once, as a field of its concern's frozen settings dataclass.

    @dataclasses.dataclass(frozen=True)
    class EmailSettings:
        CONCERN = "email"
        backend: str = setting("EMAIL_BACKEND", "outbox", "where mail goes", choices=("outbox", ...))

`setting()` puts a `Var` (the environment variable's name, default, meaning, whether it is a
secret, its limits, its deployment check) into the field's metadata. From those declarations come
the settings objects (`load`), `check-config` (vibe.ops.config_check) and the README's
configuration table (`vibe.config.markdown_table`); nothing else names a variable's default.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

Env = Mapping[str, str]


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Var:
    name: str  # the environment variable
    default: Any
    meaning: str
    secret: bool = False  # check-config shows its kind and length only
    credentials: bool = False  # a URL that may carry a user and password: shown without them
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    sep: str = ","  # for a list
    parse: Callable[[str], Any] | None = None  # raw text -> value, raising ConfigError(message)
    derive: Callable[[Env], Any] | None = None  # the default, when it depends on other variables
    default_text: str | None = None  # the default as the README shows it
    production: bool | Callable[[Env], bool] = False  # required when VIBE_ENV=production
    check: Callable[[str, bool], str] | None = None  # (value, production) -> problem, for check-config
    hint: str = ""  # check-config's note when it is not set
    field: str = ""  # filled in by `variables()`
    concern: str = ""

    def read(self, env: Env) -> Any:
        raw = env.get(self.name, "").strip()
        if not raw:
            return self.derive(env) if self.derive else _copy(self.default)
        try:
            value = self.parse(raw) if self.parse else self._convert(raw)
        except ConfigError as exc:
            raise ConfigError(f"{self.name}: {exc}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise ConfigError(f"{self.name}: must be at least {_num(self.minimum)}, got {_num(value)}")
            if self.maximum is not None and value > self.maximum:
                raise ConfigError(f"{self.name}: must be at most {_num(self.maximum)}, got {_num(value)}")
        return value

    def _convert(self, raw: str) -> Any:
        kind = type(self.default)
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"expected true or false, got {raw!r}")
        if kind is int:
            try:
                return int(raw)
            except ValueError:
                raise ConfigError(f"expected a whole number, got {raw!r}") from None
        if kind is float:
            try:
                return float(raw)
            except ValueError:
                raise ConfigError(f"expected a number, got {raw!r}") from None
        if kind is tuple:
            return tuple(part.strip() for part in raw.split(self.sep) if part.strip())
        if self.choices:
            if raw.lower() not in self.choices:
                raise ConfigError(f"expected one of {', '.join(self.choices)}, got {raw.lower()!r}")
            return raw.lower()
        return raw

    def required(self, env: Env, production: bool) -> bool:
        return production and (self.production(env) if callable(self.production) else self.production)

    def shown_default(self) -> str:
        """The default as the README's table shows it."""
        if self.default_text is not None:
            return self.default_text
        value = self.default
        if isinstance(value, bool):
            return f"`{str(value).lower()}`"
        if isinstance(value, (int, float)):
            return _num(value)
        if isinstance(value, tuple):
            return f"`{self.sep.join(value)}`" if value else ""
        if isinstance(value, dict):
            return f"`{','.join(f'{k}={v}' for k, v in value.items())}`" if value else ""
        return f"`{value}`" if value else ""

    def mask(self, value: str) -> str:
        """What check-config may show of a value: a secret's kind and length, never a character of
        the secret itself; a URL's scheme, host and path, without user or password."""
        if not value:
            return ""
        if self.credentials:
            parts = urllib.parse.urlsplit(value)
            return f"{parts.scheme}://…@{parts.hostname or ''}{parts.path}" if parts.scheme else "…"
        if self.secret:
            prefix = next((p for p in PUBLIC_PREFIXES if value.startswith(p)), "")
            return f"{prefix}… ({len(value)} characters)"
        return value


# The start of a key that says its kind and nothing secret (Stripe, Svix, Supabase, Resend).
PUBLIC_PREFIXES = ("sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_", "sb_secret_", "re_")


def setting(name: str, default: Any, meaning: str, **options: Any) -> Any:
    """A dataclass field read from the environment variable `name` (see `Var` for the options)."""
    var = Var(name, default, meaning, **options)
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: _copy(default), metadata={"var": var})
    return dataclasses.field(default=default, metadata={"var": var})


def variables(cls: type) -> list[Var]:
    """The declared variables of a settings class, in declaration order."""
    return [dataclasses.replace(f.metadata["var"], field=f.name, concern=cls.CONCERN)
            for f in dataclasses.fields(cls) if "var" in f.metadata]


def load(cls: type, env: Env) -> Any:
    """Build a settings object from the environment; a bad value raises `ConfigError`."""
    return cls(**{var.field: var.read(env) for var in variables(cls)})


def data_dir(env: Env) -> Path:
    """VIBE_DATA_DIR, which the default database and other local files live in."""
    return Path(env.get("VIBE_DATA_DIR", "").strip() or "var")


# -- parsers and checks several concerns use


def fraction(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"expected a number, got {raw!r}") from None
    if not 0 < value <= 1:
        raise ConfigError(f"expected a fraction above 0 and at most 1, got {_num(value)}")
    return value


def base_url(raw: str) -> str:
    value = raw.rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"expected http(s)://host[/path], got {value!r}")
    return value


def url_problem(value: str, production: bool) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected an http(s) URL"
    if production and parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return "use https in production"
    return ""


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
