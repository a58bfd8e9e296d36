-- message_id dedupe per sender (see 041_analytics_scopes.sql). SQLite cannot drop the inline
-- UNIQUE on message_id: the table is rebuilt (same columns, ids kept, sender_scope last as on
-- PostgreSQL) and its indexes made again. Existing rows get the scope their source implies.
CREATE TABLE analytics_events_scoped (
    id BIGSERIAL PRIMARY KEY,
    message_id TEXT NOT NULL,
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
    source TEXT NOT NULL,
    sender_scope TEXT NOT NULL
);
INSERT INTO analytics_events_scoped (id, message_id, endpoint, event, user_id, anonymous_id, session_id, ts,
                                     received_at, sent_at, properties, context, is_bot, source, sender_scope)
SELECT id, message_id, endpoint, event, user_id, anonymous_id, session_id, ts, received_at, sent_at, properties,
       context, is_bot, source,
       CASE source WHEN 'user' THEN 'user:' || COALESCE(user_id, '')
                   WHEN 'anonymous' THEN 'anon:' || COALESCE(anonymous_id, '')
                   ELSE source END
FROM analytics_events;
DROP TABLE analytics_events;
ALTER TABLE analytics_events_scoped RENAME TO analytics_events;
CREATE INDEX analytics_events_user ON analytics_events (user_id, ts);
CREATE INDEX analytics_events_anonymous ON analytics_events (anonymous_id);
CREATE INDEX analytics_events_name_ts ON analytics_events (event, ts);
CREATE INDEX analytics_events_received ON analytics_events (received_at);
CREATE UNIQUE INDEX analytics_events_scope_message ON analytics_events (sender_scope, message_id);
