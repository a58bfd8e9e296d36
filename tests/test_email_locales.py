"""Mail in German and English: the language comes from the recipient's profile `locale`, else
EMAIL_DEFAULT_LOCALE (`de`); money, dates and numbers are Babel's for the language; data a
template does not declare reaches it escaped; `email preview --locale`; and end to end, through
the queue, the worker and the outbox, on both databases."""

import uuid
from pathlib import Path

import pytest
import tokens
from conftest import run_cli
from email_support import add_profile, outbox, queue, start_email, wait_status  # noqa: F401

from vibe.config import ConfigError, Settings
from vibe.email.locales import EMAIL_DIR, Formats, choose, language_of, languages
from vibe.email.templates import EmailRenderer, EmailTemplate, TemplateError, collect_templates
from vibe.plugins.hookspecs import hookimpl
from vibe.plugins.host import build_plugin_manager

NBSP, NNBSP, THIN = "\u00a0", "\u202f", "\u2009"  # where Babel keeps parts of a format together
ADA = {"full_name": "Ada Lovelace", "email": "ada@example.com"}


def make_renderer(tmp_path, extra=(), **env):
    settings = Settings.from_env({"VIBE_DATA_DIR": str(tmp_path), "PUBLIC_URL": "https://learn.example.com", **env})
    return EmailRenderer(collect_templates(build_plugin_manager(settings, extra=extra), settings), settings)


@pytest.fixture
def renderer(tmp_path):
    return make_renderer(tmp_path)


def render(renderer, name, data, recipient=ADA, **options):
    template = renderer.templates[name]
    return renderer.render(name, renderer.context(template, data, recipient=recipient, **options))


# -- formats


@pytest.mark.parametrize("language, expected", [
    ("de", {"eur": f"49,00{NBSP}€", "usd": f"29,00{NBSP}$", "jpy": f"500{NBSP}¥", "kwd": f"5,120{NBSP}KWD",
            "huf": f"1.000{NBSP}HUF", "big": f"1.234.567,89{NBSP}€"}),
    ("en", {"eur": "€49.00", "usd": "$29.00", "jpy": "¥500", "kwd": "KWD5.120", "huf": "HUF1,000",
            "big": "€1,234,567.89"}),
])
def test_money_is_babels_for_the_language_from_the_smallest_unit(language, expected):
    money = Formats(language).money
    assert money(4900, "eur") == expected["eur"] and money(4900, "EUR") == expected["eur"]
    assert money(2900, "usd") == expected["usd"]
    assert money(500, "jpy") == expected["jpy"]  # JPY has no minor unit: 500 is ¥500
    assert money(5120, "kwd") == expected["kwd"]  # three decimals
    assert money(100000, "huf") == expected["huf"]  # Stripe's HUF amounts carry two decimals
    assert money(123456789, "eur") == expected["big"]
    assert money(10**33 + 4, "usd").endswith(("0,04" + NBSP + "$", ".04"))  # past Decimal's 28 digits
    for bad in (True, "lots", float("nan"), [1]):
        with pytest.raises((TypeError, ValueError)):
            money(bad, "eur")
    with pytest.raises(ValueError, match="currency"):
        money(100, "euro")


def test_dates_numbers_rates_and_weeks_are_babels_for_the_language():
    de, en = Formats("de"), Formats("en")
    assert de.date(1764115200) == "26. November 2025" == de.date("2025-11-26")
    assert en.date(1764115200) == "November 26, 2025" == en.date("2025-11-26T00:00:00Z")
    assert de.datetime(1764979199) == "5. Dezember 2025, 23:59 UTC"
    assert en.datetime("2025-12-05T23:59:59Z") == f"December 5, 2025, 11:59{NNBSP}PM UTC"
    assert de.date(None) == "" and en.datetime("") == "" and de.date("soon") == "soon"  # as given
    assert (de.number(1234567), en.number(1234567), de.number(2.5), en.number(2.5)) == (
        "1.234.567", "1,234,567", "2,5", "2.5")
    assert (de.percent(0.2), en.percent(0.2), de.percent(0.125), en.percent(1 / 3)) == (
        f"20{NBSP}%", "20%", f"12,5{NBSP}%", "33.33%")
    assert de.week("2026-W48") == "23.–29. Nov. 2026" and en.week("2026-W48") == f"Nov 23{THIN}–{THIN}29, 2026"
    assert de.week("2026-W99") == "2026-W99"


def test_no_template_formats_by_hand():
    """Money, dates and numbers go through the filters: no `/ 100`, `%.2f`, `round` or `* 100`."""
    for path in EMAIL_DIR.rglob("*.*"):
        text = path.read_text()
        for hand in ("/ 100", "%.2f", "|round", "* 100", "format("):
            assert hand not in text, (path, hand)


# -- the language of a message


def test_the_language_part_of_a_tag_counts_and_the_rest_falls_back():
    assert languages() == ("de", "en")
    for tag, language in (("de", "de"), ("de-DE", "de"), ("DE-at", "de"), ("de_CH.UTF-8", "de"), ("en-US", "en"),
                          ("en_GB", "en"), ("EN", "en")):
        assert language_of(tag) == language, tag
    for tag in ("fr", "fr-FR", "pt-BR", "", "d", "not a locale!", None, 5, ["de"]):
        assert language_of(tag) is None, tag
        assert choose(tag, "de") == "de" and choose(tag, "en") == "en"


def test_each_template_has_its_files_in_each_language(renderer):
    assert {p.name for p in EMAIL_DIR.iterdir() if (p / "_layout.html").is_file()} == set(languages())
    for language in languages():
        for name in renderer.templates:
            for suffix in ("subject.txt", "html", "txt"):
                assert (EMAIL_DIR / language / f"{name}.{suffix}").is_file(), (language, name, suffix)


@pytest.mark.parametrize("default", ["de", "en"])
def test_the_profile_locale_chooses_else_the_default(tmp_path, default):
    renderer = make_renderer(tmp_path, EMAIL_DEFAULT_LOCALE=default)
    cases = {"de-DE": "de", "de": "de", "en_GB": "en", "en-US": "en", "fr": default, None: default, "": default}
    for locale, language in cases.items():
        out = render(renderer, "welcome", {}, {**ADA, "locale": locale})
        assert out.locale == language and f'<html lang="{language}">' in out.html, locale
        assert out.subject == {"de": "Willkommen in der Vibe Coding Bible, Ada!",
                               "en": "Welcome to Vibe Coding Bible, Ada!"}[language]
    admin = render(renderer, "dispute_alert", {"amount": 4900, "currency": "eur", "dispute_id": "dp_1"},
                   {"email": "admin@example.com"})  # no profile: the default
    assert admin.locale == default
    assert admin.subject == {"de": f"Neue Zahlungsanfechtung: 49,00{NBSP}€", "en": "New dispute: €49.00"}[default]
    # An explicit language (email preview --locale) wins over the profile
    assert render(renderer, "welcome", {}, {**ADA, "locale": "de"}, locale="en").locale == "en"


def test_the_platform_subject_and_german_copy(renderer):
    out = render(renderer, "welcome", {}, {"email": "x@example.com"})
    assert out.subject == "Willkommen in der Vibe Coding Bible!"  # the platform's subject
    assert "Hallo,\n\nwillkommen in der Vibe Coding Bible!" in out.text and "Jetzt loslegen" in out.html
    receipt = render(renderer, "payment_confirmation", {"amount": 4900, "currency": "eur", "paid_at": 1764115200})
    assert receipt.subject == f"Deine Zahlung über 49,00{NBSP}€ ist eingegangen"
    assert f"<strong>49,00{NBSP}€</strong>" in receipt.html and "Datum: 26. November 2025" in receipt.text
    week = render(renderer, "weekly_progress", {"week": "2026-W48", "workshops_completed": 1234},
                  unsubscribe_url="https://learn.example.com/u?t=1")
    assert week.subject == "Deine Woche in der Vibe Coding Bible: 1.234 Workshops abgeschlossen"
    assert "so lief deine Woche (23.–29. Nov. 2026)" in week.text and "Abbestellen" in week.text
    commission = render(renderer, "referral_commission", {"amount": 580, "currency": "usd", "rate": 0.125},
                        {**ADA, "locale": "en"})
    assert "you earned $5.80 (12.5%)" in commission.text


def test_the_dispute_alert_in_both_languages(renderer):
    data = {"amount": 150000, "currency": "jpy", "reason": "product_not_received", "dispute_id": "dp_1/x",
            "charge_id": "ch_1", "customer_id": "cus_1", "user_id": "u-1", "user_email": "lin@example.com",
            "evidence_due_by": 1764979199}
    de = render(renderer, "dispute_alert", data, {"email": "admin@example.com"}, locale="de")
    assert de.subject == f"Neue Zahlungsanfechtung: 150.000{NBSP}¥ – Leistung nicht erhalten"
    assert "Grund: Leistung nicht erhalten (product_not_received)" in de.text
    assert "Nachweise bis: 5. Dezember 2025, 23:59 UTC" in de.text and "lin@example.com (u-1)" in de.text
    assert 'href="https://dashboard.stripe.com/disputes/dp_1/x"' in de.html  # no dashboard_url: Stripe's page
    assert "Administrator-Adresse" in de.text
    en = render(renderer, "dispute_alert", {**data, "reason": "something_new",
                                            "dashboard_url": "https://dashboard.stripe.com/test/disputes/dp_1"},
                {"email": "admin@example.com"}, locale="en")
    assert en.subject == "New dispute: ¥150,000 – something_new"  # an unknown reason as Stripe names it
    assert f"Evidence due by: December 5, 2025, 11:59{NNBSP}PM UTC" in en.text
    assert 'href="https://dashboard.stripe.com/test/disputes/dp_1"' in en.html


# -- data the template does not declare


@pytest.mark.parametrize("language", ["de", "en"])
def test_welcome_shows_the_platforms_tier_and_features_when_given(renderer, language):
    data = {"subscription_tier": "pro", "features_unlocked": ["Alle Workshops", "Community", 7, ""]}
    out = render(renderer, "welcome", data, locale=language)
    assert "<strong>pro</strong>" in out.html and "<li>Alle Workshops</li><li>Community</li></ul>" in out.html
    assert "- Alle Workshops\n- Community\n" in out.text and "- 7" not in out.text
    assert {"de": "Dein Abo: pro.", "en": "Your plan: pro."}[language] in out.text
    one = render(renderer, "welcome", {"features_unlocked": "Alle Workshops"}, locale=language)
    assert "- Alle Workshops" in one.text
    for odd in ({"features_unlocked": {"a": 1}}, {"subscription_tier": 3}, {"features_unlocked": None}):
        assert render(renderer, "welcome", odd, locale=language).text == render(
            renderer, "welcome", {}, locale=language).text


def test_undeclared_data_is_passed_escaped_and_shown_only_where_used(renderer):
    script = "<script>alert(1)</script>"
    unused = render(renderer, "workshop_completion", {"workshop_id": "w1", "tracking": script, "nested": {"x": script}})
    for part in (unused.subject, unused.html, unused.text):
        assert "<script>" not in part and "alert(1)" not in part
    used = render(renderer, "welcome", {"subscription_tier": script, "features_unlocked": [f"<b>{script}</b>"]})
    assert "<script>" not in used.html and "<b>" not in used.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in used.html and "&lt;b&gt;" in used.html
    assert f"Dein Abo: {script}." in used.text  # text is not HTML: shown as given
    # A data key may not replace what the renderer provides
    taken = render(renderer, "welcome", {"lang": "en", "user": {"first_name": "Mallory"}, "product_name": "X",
                                         "app_url": "https://evil.test"})
    assert taken.locale == "de" and "Hallo Ada" in taken.text and "evil.test" not in taken.text


# -- a plugin's own folder


def test_a_plugins_folder_may_hold_each_language_or_serve_all(tmp_path):
    folder = tmp_path / "mine"
    for language, word in (("de", "Hallo"), ("en", "Hello")):
        (folder / language).mkdir(parents=True)
        (folder / language / "nudge.subject.txt").write_text(f"{word} {{{{ 1234|number }}}}")
        (folder / language / "nudge.html").write_text('{% extends "_layout.html" %}{% block content %}'
                                                     f"{word}{{% endblock %}}")
    (folder / "nudge.txt").write_text('{% extends "_layout.txt" %}{% block content %}{{ 5|money("eur") }}'
                                      '{% endblock %}')  # one file for both

    class Mine:
        @hookimpl
        def register_email_templates(self):
            return EmailTemplate(name="nudge", category="engagement", directory=folder)

    renderer = make_renderer(tmp_path, extra=(Mine(),))
    de, en = (render(renderer, "nudge", {}, locale=language) for language in ("de", "en"))
    assert (de.subject, en.subject) == ("Hallo 1.234", "Hello 1,234")
    assert '<html lang="de">' in de.html and "Hallo" in de.html and "Hello" in en.html
    assert f"0,05{NBSP}€" in de.text and "€0.05" in en.text and "zu deinem Konto" in de.text
    (folder / "en" / "nudge.html").unlink()
    with pytest.raises(TemplateError, match="en/nudge.html"):
        make_renderer(tmp_path, extra=(Mine(),))


# -- EMAIL_DEFAULT_LOCALE


def test_email_default_locale_is_de_and_must_be_a_language_with_templates():
    assert Settings.from_env({}).email.default_locale == "de"
    assert Settings.from_env({"EMAIL_DEFAULT_LOCALE": "en-GB"}).email.default_locale == "en"
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"EMAIL_DEFAULT_LOCALE": "fr"})
    assert str(caught.value) == ("EMAIL_DEFAULT_LOCALE: expected a language vibe has email templates for (de, en), "
                                 "got 'fr'")


async def test_a_bad_default_locale_is_one_line_at_start_up(env):
    code, out, err = await run_cli("serve", env={**env, "EMAIL_DEFAULT_LOCALE": "klingon"})
    assert code == 2 and out == ""
    assert err.strip() == ("configuration error: EMAIL_DEFAULT_LOCALE: expected a language vibe has email "
                           "templates for (de, en), got 'klingon'")


# -- email preview, through run.py


async def test_preview_shows_each_language_and_defaults_to_email_default_locale(tmp_path):
    env = {"VIBE_DATA_DIR": str(tmp_path)}
    eur = '{"amount": 4900, "currency": "eur", "paid_at": 1764115200}'
    runs = {}
    for name, args, extra in (("de", ["--locale", "de"], {}), ("en", ["--locale", "en-US"], {}),
                              ("default", [], {}), ("default_en", [], {"EMAIL_DEFAULT_LOCALE": "en"})):
        code, out, err = await run_cli("email", "preview", "payment_confirmation", "--data", eur, *args,
                                       env={**env, **extra})
        assert code == 0, err
        runs[name] = out
    assert runs["de"].startswith(f"Subject: Deine Zahlung über 49,00{NBSP}€ ist eingegangen\n"
                                 "Category: transactional\nLanguage: de\n")
    assert f"Betrag: 49,00{NBSP}€" in runs["de"] and "Datum: 26. November 2025" in runs["de"]
    assert runs["en"].startswith("Subject: Your receipt: €49.00 paid\nCategory: transactional\nLanguage: en\n")
    assert "Date: November 26, 2025" in runs["en"]
    assert runs["default"] == runs["de"] and runs["default_en"] == runs["en"]
    code, out, err = await run_cli("email", "preview", "welcome", "--html", "--locale", "de", env=env)
    assert code == 0 and out.startswith('<!DOCTYPE html>\n<html lang="de">') and "Jetzt loslegen" in out
    code, out, err = await run_cli("email", "preview", "welcome", "--locale", "fr", env=env)
    assert code == 2 and "--locale: expected one of de, en" in err


# -- end to end: the queue, the worker, the outbox


async def test_learners_get_mail_in_their_profiles_language(start_email):
    service = await start_email(EMAIL_DEFAULT_LOCALE="de")
    german = await add_profile(service.db, full_name="Grete Weber", locale="de")
    english = await add_profile(service.db, full_name="Grace Hopper", locale="en-US")
    unknown = await add_profile(service.db, full_name="Jeanne Martin", locale="fr-FR")
    ids = {}
    for user in (german, english, unknown):
        resp = await queue(service, user, "payment_confirmation", {"amount": 4900, "currency": "eur"})
        assert resp.status == 202, await resp.text()
        ids[user] = (await resp.json())["id"]
    for email_id in ids.values():
        await wait_status(service, email_id, "sent")
    mail = {m["To"]: m for m in outbox(service)}
    de, en, fr = (mail[f"{user}@example.com"] for user in (german, english, unknown))
    assert de["Subject"] == "Deine Zahlung über 49,00 € ist eingegangen"  # a header's no-break space is a space
    assert f"<strong>49,00{NBSP}€</strong>" in de.get_body(("html",)).get_content()
    assert "Hallo Grete" in de.get_body(("plain",)).get_content()
    assert en["Subject"] == "Your receipt: €49.00 paid"
    assert '<html lang="en">' in en.get_body(("html",)).get_content()
    assert fr["Subject"] == de["Subject"]  # no French: EMAIL_DEFAULT_LOCALE
    assert (de["Content-Language"], en["Content-Language"], fr["Content-Language"]) == ("de", "en", "de")


async def test_a_new_learner_gets_the_welcome_in_the_locale_of_their_profile(start_email):
    """The platform's flow: create_profile with a locale, user_created queues the welcome, the
    worker sends it in that language."""
    service = await start_email(EMAIL_DEFAULT_LOCALE="en")
    subjects = {}
    for locale in ("de-DE", "en"):
        user = str(uuid.uuid4())
        address = f"{locale.lower()}@example.com"
        token = tokens.user_token(user, email=address)
        resp = await service.client.post("/functions/v1/user-management", headers=tokens.auth(token),
                                         json={"action": "create_profile",
                                               "data": {"display_name": "Lin Park", "locale": locale}})
        assert resp.status == 200, await resp.text()
        email_id = await service.db.fetchval("SELECT id FROM email_messages WHERE user_id = %s AND type = 'welcome'",
                                             (user,))
        await wait_status(service, email_id, "sent")
        [mail] = [m for m in outbox(service) if m["To"] == address]
        subjects[locale] = mail["Subject"]
        html = mail.get_body(("html",)).get_content()
        assert f'<html lang="{locale[:2]}">' in html
    assert subjects == {"de-DE": "Willkommen in der Vibe Coding Bible, Lin!", "en": "Welcome to Vibe Coding Bible, Lin!"}


async def test_the_platforms_welcome_data_reaches_the_mail_escaped(start_email):
    """The webhook's welcome call: `subscription_tier` and `features_unlocked`, which `welcome` does
    not declare, are shown in the learner's language; markup in them stays text; a key no
    template uses appears nowhere."""
    service = await start_email(EMAIL_DEFAULT_LOCALE="en")
    user = await add_profile(service.db, full_name="Grete Weber", locale="de-AT")
    data = {"subscription_tier": "pro", "features_unlocked": ["Alle Workshops", "<img src=x onerror=alert(1)>"],
            "campaign": "<script>alert(2)</script>"}
    resp = await queue(service, user, "welcome", data)
    assert resp.status == 202, await resp.text()
    await wait_status(service, (await resp.json())["id"], "sent")
    [mail] = outbox(service)
    html, text = mail.get_body(("html",)).get_content(), mail.get_body(("plain",)).get_content()
    assert mail["Subject"] == "Willkommen in der Vibe Coding Bible, Grete!"
    assert "Dein Abo: <strong>pro</strong>." in html and "<li>Alle Workshops</li>" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
    assert "Dein Abo: pro." in text and "- Alle Workshops" in text
    assert "alert(2)" not in html + text + str(mail["Subject"])


async def test_the_administrator_gets_the_dispute_alert_in_the_default_language(start_email):
    service = await start_email(EMAIL_DEFAULT_LOCALE="de", ADMIN_EMAIL="admin@example.com")
    data = {"amount": 4900, "currency": "eur", "reason": "fraudulent", "dispute_id": "dp_1", "charge_id": "ch_1",
            "evidence_due_by": 1764979199}
    resp = await queue(service, "admin", "dispute_alert", data)
    assert resp.status == 202, await resp.text()
    await wait_status(service, (await resp.json())["id"], "sent")
    [mail] = outbox(service)
    assert mail["To"] == "admin@example.com"
    assert mail["Subject"] == "Neue Zahlungsanfechtung: 49,00 € – Betrug, Zahlung nicht autorisiert"
    assert "Nachweise bis: 5. Dezember 2025, 23:59 UTC" in mail.get_body(("plain",)).get_content()


def test_the_layouts_name_their_language():
    for language in languages():
        assert '<html lang="{{ lang }}">' in Path(EMAIL_DIR / language / "_layout.html").read_text()
