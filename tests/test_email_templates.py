"""The nine templates: each renders (HTML and text) in each language with and without its optional
data; data is validated; registration mistakes are start-up errors; the preview command.
Languages and formats in detail: tests/test_email_locales.py."""

import pytest
from conftest import ROOT

from vibe import cli
from vibe.config import Settings
from vibe.email.templates import (
    EmailRenderer,
    EmailTemplate,
    TemplateError,
    collect_templates,
)
from vibe.plugins.hookspecs import hookimpl
from vibe.plugins.host import build_plugin_manager

TYPES = {"welcome", "payment_confirmation", "payment_failed", "workshop_completion", "achievement",
         "subscription_expiring", "weekly_progress", "referral_commission", "dispute_alert"}
REQUIRED_ONLY = {
    "welcome": {}, "weekly_progress": {},
    "payment_confirmation": {"amount": 1999, "currency": "usd"},
    "payment_failed": {"amount": 500, "currency": "eur"},
    "referral_commission": {"amount": 100, "currency": "gbp"},
    "workshop_completion": {"workshop_id": "w-1"},
    "achievement": {"achievement": {"key": "streak_7"}},
    "subscription_expiring": {"period_end": 1764374400},
    "dispute_alert": {"amount": 4900, "currency": "eur", "dispute_id": "dp_1"},
}


@pytest.fixture
def renderer(tmp_path):
    settings = Settings.from_env({"VIBE_DATA_DIR": str(tmp_path), "PUBLIC_URL": "https://learn.example.com/"})
    return EmailRenderer(collect_templates(build_plugin_manager(settings), settings), settings)


def test_the_nine_templates_are_registered_with_their_categories(renderer):
    assert set(renderer.templates) == TYPES == set(REQUIRED_ONLY)
    categories = {name: t.category for name, t in renderer.templates.items()}
    assert {n for n, c in categories.items() if c == "transactional"} == {"welcome", "payment_confirmation",
                                                                           "payment_failed", "dispute_alert"}


@pytest.mark.parametrize("name", sorted(TYPES))
@pytest.mark.parametrize("variant", ["sample", "required_only"])
@pytest.mark.parametrize("language", ["de", "en"])
def test_each_template_renders_html_and_text_in_each_language(renderer, name, variant, language):
    template = renderer.templates[name]
    data = dict(template.sample) if variant == "sample" else REQUIRED_ONLY[name]
    assert template.validate(data) == []
    unsubscribe = "https://learn.example.com/u?token=x" if template.category == "engagement" else None
    recipient = {"full_name": "Ada Lovelace", "email": "ada@example.com", "locale": language}
    out = renderer.render(name, renderer.context(template, data, recipient=recipient, unsubscribe_url=unsubscribe))
    assert out.locale == language
    assert out.subject and "\n" not in out.subject and "None" not in out.subject
    assert out.html.lstrip().startswith(f'<!DOCTYPE html>\n<html lang="{language}">') and "</html>" in out.html
    assert "Vibe Coding Bible" in out.text and "<p>" not in out.text
    assert "None" not in out.text and "None" not in out.html
    assert "{{" not in out.text + out.html and "{%" not in out.text + out.html
    assert ("https://learn.example.com/u?token=x" in out.text) == (template.category == "engagement")
    if variant == "sample" and name not in ("achievement", "dispute_alert"):
        assert "Ada" in out.text
    other = {"de": "en", "en": "de"}[language]
    assert renderer.render(name, renderer.context(template, data, recipient=recipient, locale=other)).text != out.text


def test_html_is_autoescaped_and_text_is_not(renderer):
    template = renderer.templates["workshop_completion"]
    data = {"workshop_id": "w1", "workshop_title": "<script>alert(1)</script> & more"}
    out = renderer.render("workshop_completion", renderer.context(template, data, recipient={}))
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html
    assert "<script>alert(1)</script> & more" in out.text


def test_validation_names_each_problem(renderer):
    receipt = renderer.templates["payment_confirmation"]
    assert receipt.validate({}) == ["data.amount: required", "data.currency: required"]
    assert receipt.validate({"amount": "12", "currency": "usd"}) == ["data.amount: expected a whole number"]
    assert receipt.validate({"amount": True, "currency": "usd"}) == ["data.amount: expected a whole number"]
    assert receipt.validate({"amount": 1, "currency": "dollars"}) == ["data.currency: expected a three-letter ISO code"]
    assert receipt.validate({"amount": -1, "currency": "usd"}) == ["data.amount: must not be negative"]
    assert receipt.validate([1]) == ["data: expected a JSON object"]
    problems = receipt.validate({"amount": 1, "currency": "usd", "colour": "red"})
    assert len(problems) == 1 and problems[0].startswith("data.colour: not a field of payment_confirmation")
    assert renderer.templates["achievement"].validate({"achievement": "x"}) == ["data.achievement: expected an object"]


class Duplicate:
    @hookimpl
    def register_email_templates(self):
        return [EmailTemplate(name="welcome", category="transactional")]


class BadCategory:
    @hookimpl
    def register_email_templates(self):
        return EmailTemplate(name="promo", category="marketing")


class MissingFiles:
    @hookimpl
    def register_email_templates(self):
        return [EmailTemplate(name="no_such_files", category="engagement")]


@pytest.mark.parametrize("plugin, message", [(Duplicate(), "two plugins"), (BadCategory(), "category"),
                                             (MissingFiles(), "no_such_files")])
def test_registration_mistakes_are_start_up_errors(tmp_path, plugin, message):
    settings = Settings.from_env({"VIBE_DATA_DIR": str(tmp_path)})
    pm = build_plugin_manager(settings, extra=(plugin,))
    with pytest.raises(TemplateError, match=message):
        EmailRenderer(collect_templates(pm, settings), settings)


def test_preview_command(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("VIBE_DATA_DIR", str(tmp_path))
    assert cli.main(["email", "preview", "payment_confirmation", "--locale", "en"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Subject: Your receipt: $29.00 paid\nCategory: transactional\nLanguage: en\n")
    assert cli.main(["email", "preview", "payment_failed", "--data", '{"amount": 1500, "currency": "usd"}',
                     "--html", "--locale", "en"]) == 0
    html = capsys.readouterr().out
    assert html.startswith('<!DOCTYPE html>\n<html lang="en">') and "$15.00" in html
    assert cli.main(["email", "preview", "achievement", "--text"]) == 0
    assert "First steps" in capsys.readouterr().out
    assert cli.main(["email", "preview", "nope"]) == 1
    assert "no email template named 'nope'" in capsys.readouterr().err
    assert cli.main(["email", "preview", "payment_failed", "--data", "{bad"]) == 1
    assert "--data is not valid JSON" in capsys.readouterr().err
    assert cli.main(["email", "preview", "payment_failed", "--data", "{}"]) == 1
    assert "data.amount: required" in capsys.readouterr().err


def test_the_example_third_party_plugin_loads_and_renders(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("VIBE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VIBE_PLUGINS_DIRS", str(ROOT / "examples" / "email_plugin"))
    assert cli.main(["email", "preview", "course_reminder", "--html"]) == 0
    html = capsys.readouterr().out
    assert "Live build: a SaaS in an afternoon" in html and "Vibe Coding Bible" in html  # the shared layout
    # Its folder has no language folders: its files serve every language, in that language's layout
    assert '<html lang="de">' in html and "3. Dezember 2025" in html and "Abbestellen" in html
    assert cli.main(["email", "preview", "course_reminder", "--html", "--locale", "en"]) == 0
    html = capsys.readouterr().out
    assert '<html lang="en">' in html and "December 3, 2025" in html and "Unsubscribe" in html
