"""Issue 15: message_id dedupe is scoped to the sender, and an anonymous id belongs to the first
user it was linked to: a user's own journey and export hold only the events sent with their id,
the admin views add the anonymous events linked to them (sql/041_analytics_scopes*.sql)."""

import json
import shutil

import tokens
from analytics_support import (  # noqa: F401
    PREFIX,
    SERVER,
    WRITE_KEY,
    analytics,
    at,
    browser,
    get,
    post,
    stored,
)

from vibe.config import Settings
from vibe.db.database import create_database
from vibe.db.migrations import migrate
from vibe.paths import SQL_DIR

USERS = f"{PREFIX}/users"


def messages(journey: dict) -> list[str]:
    return [e["message_id"] for s in journey["sessions"] for e in s["events"]]


async def export(service, user_id: str, token: str) -> list[str]:
    resp = await service.client.get(f"{USERS}/{user_id}/events", headers=tokens.auth(token))
    assert resp.status == 200
    return [json.loads(line)["message_id"] for line in (await resp.text()).splitlines()]


async def test_an_anonymous_client_cannot_make_a_users_event_a_duplicate(analytics):
    victim = browser(tokens.user_token("victim"))
    # An anonymous browser sends first, with the id the victim's app will use next.
    squat = await post(analytics, "event", {"event": "Squat", "anonymous_id": "attacker", "message_id": "m-1",
                                            "timestamp": at(0, 9)}, browser())
    assert squat["accepted"] == 1
    mine = await post(analytics, "event", {"event": "Paid", "message_id": "m-1", "timestamp": at(0, 9, 1)}, victim)
    assert (mine["accepted"], mine["duplicate"]) == (1, 0)
    # Each sender's own retry is still a duplicate: per user, per anonymous id, for the server.
    again = await post(analytics, "event", {"event": "Paid", "message_id": "m-1", "timestamp": at(0, 9, 1)}, victim)
    assert (again["accepted"], again["duplicate"]) == (0, 1)
    squat_again = await post(analytics, "event", {"event": "Squat", "anonymous_id": "attacker", "message_id": "m-1"},
                             browser())
    assert squat_again["duplicate"] == 1
    other = await post(analytics, "event", {"event": "Squat", "anonymous_id": "someone", "message_id": "m-1"},
                       browser())
    assert other["accepted"] == 1
    server = {"event": "Server", "user_id": "victim", "message_id": "m-1", "timestamp": at(0, 9, 2)}
    assert (await post(analytics, "event", server))["accepted"] == 1
    assert (await post(analytics, "event", server))["duplicate"] == 1
    # The Segment door is the server too.
    resp = await analytics.client.post("/v1/track", json={"writeKey": WRITE_KEY, "event": "Server",
                                                          "userId": "victim", "messageId": "m-1"})
    assert (await resp.json())["duplicate"] == 1
    rows = await stored(analytics, message_id="m-1")
    assert sorted(r["sender_scope"] for r in rows) == ["anon:attacker", "anon:someone", "server", "user:victim"]
    assert messages(await get(analytics, "journey/victim", tokens.user_token("victim"))) == ["m-1", "m-1"]
    span = {"from": at(0), "to": at(1)}
    assert (await get(analytics, "metrics", name="Paid", **span))["series"][0]["count"] == 1


async def test_an_anonymous_id_links_to_its_first_user_only(analytics):
    a, b = tokens.user_token("user-a"), tokens.user_token("user-b")
    # B browses anonymously, then signs in on the same browser: anon-b is linked to B.
    await post(analytics, "page-view", {"anonymous_id": "anon-b", "properties": {"path": "/secret"},
                                        "message_id": "b-anon", "timestamp": at(0, 8)}, browser())
    await post(analytics, "event", {"event": "Signed In", "anonymous_id": "anon-b", "message_id": "b-in",
                                    "timestamp": at(0, 8, 5)}, browser(b))
    # A sends an event carrying B's anonymous id: stored as A's own, but not linked to A.
    await post(analytics, "event", {"event": "Steal", "anonymous_id": "anon-b", "message_id": "a-steal",
                                    "timestamp": at(0, 9)}, browser(a))
    # And the server naming A with anon-b changes nothing either.
    await post(analytics, "event", {"event": "Steal", "user_id": "user-a", "anonymous_id": "anon-b",
                                    "message_id": "a-server", "timestamp": at(0, 9, 1)})
    links = await analytics.db.fetchall("SELECT anonymous_id, user_id FROM analytics_anonymous_links")
    assert [(r["anonymous_id"], r["user_id"]) for r in links] == [("anon-b", "user-b")]
    # A's own views and the admin's view of A: A's events only, never B's anonymous history.
    assert messages(await get(analytics, "journey/user-a", a)) == ["a-steal", "a-server"]
    assert messages(await get(analytics, "journey/user-a")) == ["a-steal", "a-server"]
    assert await export(analytics, "user-a", a) == ["a-steal", "a-server"]
    assert await export(analytics, "user-a", tokens.service_token()) == ["a-steal", "a-server"]
    # B's own view: the events sent with B's id; the admin's view adds the linked anonymous events.
    assert messages(await get(analytics, "journey/user-b", b)) == ["b-in"]
    assert await export(analytics, "user-b", b) == ["b-in"]
    assert messages(await get(analytics, "journey/user-b")) == ["b-anon", "b-in"]
    assert await export(analytics, "user-b", tokens.admin_token()) == ["b-anon", "b-in"]
    # An anonymous id no one has linked yet goes to the first user who sends it, but even then
    # that user's own views never show its anonymous history (only an admin's does).
    await post(analytics, "page-view", {"anonymous_id": "anon-c", "properties": {"path": "/c"},
                                        "message_id": "c-anon", "timestamp": at(0, 7)}, browser())
    await post(analytics, "event", {"event": "Claim", "anonymous_id": "anon-c", "message_id": "a-claim",
                                    "timestamp": at(0, 10)}, browser(a))
    assert messages(await get(analytics, "journey/user-a", a)) == ["a-steal", "a-server", "a-claim"]
    assert messages(await get(analytics, "journey/user-a")) == ["c-anon", "a-steal", "a-server", "a-claim"]


async def test_erasure_follows_the_links_and_frees_the_anonymous_id(analytics):
    a, b = tokens.user_token("user-a"), tokens.user_token("user-b")
    await post(analytics, "page-view", {"anonymous_id": "anon-b", "properties": {"path": "/"},
                                        "message_id": "b-anon", "timestamp": at(0, 8)}, browser())
    await post(analytics, "event", {"event": "In", "anonymous_id": "anon-b", "message_id": "b-in",
                                    "timestamp": at(0, 8, 5)}, browser(b))
    await post(analytics, "event", {"event": "Steal", "anonymous_id": "anon-b", "message_id": "a-steal",
                                    "timestamp": at(0, 9)}, browser(a))
    assert messages(await get(analytics, "journey/user-b")) == ["b-anon", "b-in"]  # cached now
    resp = await analytics.client.delete(f"{USERS}/user-a", headers=tokens.auth(tokens.admin_token()))
    # A's erasure takes A's own event only: B's anonymous history is not A's to erase.
    assert (await resp.json()) == {"user_id": "user-a", "events_deleted": 1, "actor_rows_deleted": 4,
                                   "anonymous_ids": 0}
    assert [r["message_id"] for r in await stored(analytics)] == ["b-anon", "b-in"]
    resp = await analytics.client.delete(f"{USERS}/user-b", headers=tokens.auth(tokens.admin_token()))
    assert (await resp.json()) == {"user_id": "user-b", "events_deleted": 2, "actor_rows_deleted": 8,
                                   "anonymous_ids": 1}
    assert await stored(analytics) == []
    assert await analytics.db.fetchval("SELECT COUNT(*) FROM analytics_anonymous_links") == 0
    assert messages(await get(analytics, "journey/user-b")) == []
    # The id is free again: the next user to send it is linked.
    await post(analytics, "event", {"event": "In", "anonymous_id": "anon-b", "message_id": "c-in"},
               browser(tokens.user_token("user-c")))
    link = await analytics.db.fetchone("SELECT user_id FROM analytics_anonymous_links WHERE anonymous_id = 'anon-b'")
    assert link["user_id"] == "user-c"


async def test_in_one_batch_the_first_event_links(analytics):
    batch = [{"event": "x", "user_id": "first", "anonymous_id": "shared", "message_id": "1"},
             {"event": "x", "user_id": "second", "anonymous_id": "shared", "message_id": "2"},
             {"event": "x", "user_id": "second", "anonymous_id": "own", "message_id": "3"}]
    assert (await post(analytics, "event", {"batch": batch}))["accepted"] == 3
    links = await analytics.db.fetchall("SELECT anonymous_id, user_id FROM analytics_anonymous_links "
                                        "ORDER BY anonymous_id")
    assert [(r["anonymous_id"], r["user_id"]) for r in links] == [("own", "second"), ("shared", "first")]


OLD_COLUMNS = ("message_id, endpoint, event, user_id, anonymous_id, session_id, ts, received_at, sent_at, "
               "properties, context, is_bot, source")


async def test_migration_041_scopes_the_stored_events_and_links_their_anonymous_ids(start_service, database_url,
                                                                                     tmp_path):
    """A database as it was before 041 (message_id unique across senders, links implied by the
    events) migrates: each row gets its sender's scope, each anonymous id its first user."""
    url = database_url if not database_url.startswith("sqlite") else f"sqlite:///{tmp_path / 'before.db'}"
    before = tmp_path / "sql-before-041"
    before.mkdir()
    for path in SQL_DIR.glob("*.sql"):
        if int(path.name.split("_", 1)[0]) < 41:
            shutil.copy(path, before / path.name)
    db = create_database(Settings.from_env({"DATABASE_URL": url}))
    await db.open()
    try:
        await migrate(db, before)
        old = [  # (message_id, user_id, anonymous_id, source, ts)
            ("pre", None, "anon-old", "anonymous", at(0, 8)),
            ("old-1", "old-user", "anon-old", "user", at(0, 9)),
            ("late", "late-user", "anon-old", "user", at(0, 10)),  # later: not linked
            ("srv", "old-user", None, "server", at(0, 11)),
            ("bill", "old-user", None, "billing", at(0, 12)),
        ]
        for message_id, user_id, anonymous_id, source, ts in old:
            await db.execute(f"INSERT INTO analytics_events ({OLD_COLUMNS}) VALUES "
                             "(%s, 'event', 'Old', %s, %s, NULL, %s, %s, NULL, '{}', '{}', %s, %s)",
                             (message_id, user_id, anonymous_id, ts, ts, False, source))
        assert "analytics_scopes" not in " ".join(await migrate(db, before))
        applied = await migrate(db)
        assert "041_analytics_scopes" in applied
        rows = await db.fetchall("SELECT message_id, sender_scope FROM analytics_events ORDER BY id")
        assert [(r["message_id"], r["sender_scope"]) for r in rows] == [
            ("pre", "anon:anon-old"), ("old-1", "user:old-user"), ("late", "user:late-user"), ("srv", "server"),
            ("bill", "billing")]
        links = await db.fetchall("SELECT anonymous_id, user_id FROM analytics_anonymous_links")
        assert [(r["anonymous_id"], r["user_id"]) for r in links] == [("anon-old", "old-user")]
    finally:
        await db.close()
    service = await start_service(DATABASE_URL=url, ANALYTICS_WRITE_KEY=WRITE_KEY)
    me = browser(tokens.user_token("old-user"))
    # A stored user's id is still theirs to dedupe; another sender's same id is not in the way.
    assert (await post(service, "event", {"event": "Old", "message_id": "old-1"}, me))["duplicate"] == 1
    assert (await post(service, "event", {"event": "New", "message_id": "pre", "timestamp": at(0, 13)},
                       me))["accepted"] == 1
    assert (await post(service, "event", {"event": "New", "user_id": "x", "message_id": "srv"},
                       SERVER))["duplicate"] == 1
    assert messages(await get(service, "journey/old-user", tokens.user_token("old-user"))) == [
        "old-1", "srv", "bill", "pre"]
    assert messages(await get(service, "journey/old-user")) == ["pre", "old-1", "srv", "bill", "pre"]
    assert messages(await get(service, "journey/late-user", tokens.user_token("late-user"))) == ["late"]
    assert messages(await get(service, "journey/late-user")) == ["late"]
    resp = await service.client.delete(f"{USERS}/old-user", headers=tokens.auth(tokens.admin_token()))
    assert (await resp.json())["events_deleted"] == 5
    assert [r["message_id"] for r in await stored(service)] == ["late"]
