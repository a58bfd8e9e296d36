-- Analytics: raw events (deduplicated by message_id) and the rollups updated in the same
-- transaction as the events. Times are Unix seconds; bucket starts are whole seconds (UTC).
CREATE TABLE analytics_events (
    id BIGSERIAL PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    event TEXT NOT NULL,
    user_id TEXT,
    anonymous_id TEXT,
    session_id TEXT,
    ts DOUBLE PRECISION NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    sent_at DOUBLE PRECISION,
    properties TEXT NOT NULL,
    context TEXT NOT NULL,
    is_bot BOOLEAN NOT NULL DEFAULT FALSE,
    source TEXT NOT NULL
);
CREATE INDEX analytics_events_user ON analytics_events (user_id, ts);
CREATE INDEX analytics_events_anonymous ON analytics_events (anonymous_id);
CREATE INDEX analytics_events_name_ts ON analytics_events (event, ts);
CREATE INDEX analytics_events_received ON analytics_events (received_at);

-- Counts per event name per bucket (granularity 'hour' or 'day'); event '*' counts every event.
CREATE TABLE analytics_counts (
    granularity TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    event TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (granularity, bucket, event)
);

-- Who was seen per bucket and event name: the distinct-user counts are COUNT(*) of this
-- table, so erasing a user removes their share. actor is the user id, else 'anon:' + anonymous id.
CREATE TABLE analytics_actors (
    granularity TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    PRIMARY KEY (granularity, bucket, event, actor)
);
CREATE INDEX analytics_actors_actor ON analytics_actors (actor);

CREATE TABLE analytics_page_views (
    day BIGINT NOT NULL,
    path TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (day, path)
);

CREATE TABLE analytics_workshop_completions (
    day BIGINT NOT NULL,
    workshop_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    scored BIGINT NOT NULL,
    score_sum DOUBLE PRECISION NOT NULL,
    timed BIGINT NOT NULL,
    duration_sum DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (day, workshop_id)
);

-- Revenue in the currency's smallest unit, per day, tier and currency.
CREATE TABLE analytics_revenue (
    day BIGINT NOT NULL,
    tier TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount BIGINT NOT NULL,
    payments BIGINT NOT NULL,
    PRIMARY KEY (day, tier, currency)
);

-- Erasures done (forget): what was erased and when; user ids are kept only as a SHA-256.
-- Every instance watches this table to drop its query cache at once.
CREATE TABLE analytics_erasures (
    id BIGSERIAL PRIMARY KEY,
    user_hash TEXT NOT NULL,
    events_deleted BIGINT NOT NULL,
    erased_at DOUBLE PRECISION NOT NULL
);

-- Business metrics a server reports (business-metric endpoint): count and sum per name per day.
CREATE TABLE analytics_business_metrics (
    day BIGINT NOT NULL,
    name TEXT NOT NULL,
    n BIGINT NOT NULL,
    total DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (day, name)
);
