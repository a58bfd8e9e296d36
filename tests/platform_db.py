"""The platform's Supabase database, as far as vibe must leave it alone (../shared/CONTRACT.md, its
last section): its tables in `public`, with names vibe uses too and other columns, a few rows
each, and Supabase's `auth` schema. Plus the server-wide things the tests make and must remove:
roles and databases (`Server`), and what a test compares before and after (`fingerprint`)."""

from __future__ import annotations

import contextlib
import uuid

import psycopg2

# Each table: its columns, and a row expression over g (1..3) and u (a uuid per row).
PLATFORM_TABLES = {
    "profiles": (("id uuid PRIMARY KEY, full_name text NOT NULL, avatar_url text, subscription_tier text, "
                  "stripe_customer_id text, created_at timestamptz NOT NULL"),
                 "u, 'Learner ' || g, NULL, 'pro', 'cus_platform_' || g, '2024-01-01'::timestamptz + g * interval '1 day'"),
    "subscriptions": (("id bigserial PRIMARY KEY, user_id uuid NOT NULL, plan_id int, status text, "
                       "current_period_end timestamptz"), "g, u, g, 'active', '2030-01-01'"),
    "subscription_plans": ("id serial PRIMARY KEY, name text UNIQUE, price_cents int, features jsonb",
                           "g, 'plan ' || g, 1000 * g, jsonb_build_object('workshops', g)"),
    "payment_history": ("id uuid PRIMARY KEY, user_id uuid, amount numeric(10, 2), paid_at timestamptz",
                        "u, u, 19.99 * g, '2024-02-01'"),
    "user_progress": (("user_id uuid, commandment_id int, completed boolean, notes text, "
                       "PRIMARY KEY (user_id, commandment_id)"), "u, g, g % 2 = 0, 'note ' || g"),
    "achievements": ("id serial PRIMARY KEY, title text, points int", "g, 'badge ' || g, 10 * g"),
    "user_achievements": ("user_id uuid, achievement_id int, earned_at timestamptz",
                          "u, g, '2024-03-01'"),
    "analytics_events": ("id bigserial PRIMARY KEY, event_name text, payload jsonb, created_at timestamptz",
                         "g, 'page_view', jsonb_build_object('n', g), '2024-04-01'"),
    "user_behavior_events": ("id uuid PRIMARY KEY, user_id uuid, action text", "u, u, 'click ' || g"),
    "business_metrics": ("metric text, value double precision, at date", "'mrr', g * 1.5, '2024-05-01'"),
    "email_logs": ("id bigserial PRIMARY KEY, recipient text, template text, sent boolean",
                   "g, 'p' || g || '@example.com', 'welcome', true"),
    "user_referrals": ("referrer uuid, referred uuid, code text", "u, u, 'REF' || g"),
    "commandments": ("id int PRIMARY KEY, title text", "g, 'Commandment ' || g"),
    "workshop_modules": ("id int PRIMARY KEY, slug text, position int", "g, 'module-' || g, g"),
}
AUTH_TABLES = {"users": ("id uuid PRIMARY KEY, email text UNIQUE, encrypted_password text, created_at timestamptz",
                         "u, 'auth' || g || '@example.com', 'x', '2024-01-01'")}


def platform_sql() -> list[str]:
    """The statements that build the platform's tables, with three rows each."""
    out = ["CREATE SCHEMA auth"]
    for schema, tables in (("auth", AUTH_TABLES), ("public", PLATFORM_TABLES)):
        for name, (columns, row) in tables.items():
            out.append(f"CREATE TABLE {schema}.{name} ({columns})")
            out.append(f"INSERT INTO {schema}.{name} SELECT {row} FROM generate_series(1, 3) g, "
                       "LATERAL (SELECT md5(g::text || random()::text)::uuid AS u) r")
    out.append("ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY")
    out.append("CREATE POLICY profiles_self ON public.profiles USING (true)")
    return out


FINGERPRINT = [
    # every relation outside vibe's schemas, with its columns, its rights and whether it has RLS
    """SELECT n.nspname, c.relname, c.relkind, c.relrowsecurity, coalesce(c.relacl::text, ''),
              (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
                 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('public', 'auth') ORDER BY 1, 2""",
    "SELECT schemaname, tablename, policyname, qual FROM pg_policies WHERE schemaname IN ('public', 'auth') ORDER BY 1, 2, 3",
    ("SELECT nspname, coalesce(nspacl::text, ''), nspowner::regrole::text FROM pg_namespace "
     "WHERE nspname IN ('public', 'auth') ORDER BY 1"),
    ("SELECT n.nspname, p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
     "WHERE n.nspname IN ('public', 'auth') ORDER BY 1, 2"),
]


def fingerprint(url: str) -> dict[str, object]:
    """Each platform table's checksum (of its rows), and the catalog's view of public and auth."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            sums = {}
            for schema, tables in (("auth", AUTH_TABLES), ("public", PLATFORM_TABLES)):
                for name in tables:
                    cur.execute(f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                                f"FROM {schema}.{name} t")
                    sums[f"{schema}.{name}"] = cur.fetchone()
            catalog = []
            for query in FINGERPRINT:
                cur.execute(query)
                catalog.append(cur.fetchall())
        return {"rows": sums, "catalog": catalog}
    finally:
        conn.rollback()
        conn.close()


class Server:
    """Roles and databases made on the test's PostgreSQL server, removed again by `close`."""

    def __init__(self, url: str):
        self.url = url
        self.admin = psycopg2.connect(url)
        self.admin.autocommit = True
        self.suffix = uuid.uuid4().hex[:8]
        self.roles: list[str] = []
        self.databases: list[str] = []

    def run(self, sql: str, params: tuple = (), url: str | None = None) -> list[tuple]:
        if url is None:
            with self.admin.cursor() as cur:
                cur.execute(sql, params or None)
                return cur.fetchall() if cur.description else []
        conn = psycopg2.connect(url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params or None)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def role(self, prefix: str, options: str = "NOLOGIN") -> str:
        name = f"{prefix}_{self.suffix}"
        self.run(f"CREATE ROLE {name} {options}")
        self.roles.append(name)
        return name

    def forget_role_later(self, name: str) -> None:
        """A role a migration made: dropped at `close` too."""
        self.roles.append(name)

    def database(self, prefix: str, owner: str) -> str:
        name = f"{prefix}_{self.suffix}"
        self.run(f"CREATE DATABASE {name} OWNER {owner}")
        self.databases.append(name)
        return name

    def url_of(self, database: str, user: str | None = None) -> str:
        parts = psycopg2.extensions.parse_dsn(self.url)
        host, port = parts.get("host", "127.0.0.1"), parts.get("port", "5432")
        return f"postgresql://{user or parts.get('user', 'postgres')}@{host}:{port}/{database}"

    def close(self) -> None:
        for database in self.databases:
            self.run(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        for role in reversed(self.roles):
            with contextlib.suppress(psycopg2.Error):  # a role that was never made
                for database in ("postgres",):
                    self.run(f"DROP OWNED BY {role}", url=self.url_of(database))
            self.run(f"DROP ROLE IF EXISTS {role}")
        self.admin.close()

