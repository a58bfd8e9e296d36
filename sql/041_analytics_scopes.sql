-- Issue 15: an anonymous id is linked to one user, and message_id dedupe is scoped to the sender.
--
-- analytics_anonymous_links: the user an anonymous id belongs to, set by the first stored event
-- that carries both (a signed-in user's own event, or a server's), never changed afterwards: a
-- second user sending the same anonymous id does not take it over. Admin views and erasure
-- follow the link; a user's own journey and export show only the events sent with their id.
-- Links that existed implicitly (events carrying both ids) are carried over: the earliest
-- stored such event of each anonymous id names its user.
CREATE TABLE analytics_anonymous_links (
    anonymous_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    linked_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX analytics_anonymous_links_user ON analytics_anonymous_links (user_id);
INSERT INTO analytics_anonymous_links (anonymous_id, user_id, linked_at)
SELECT anonymous_id, user_id, received_at FROM analytics_events
WHERE id IN (SELECT MIN(id) FROM analytics_events
             WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL GROUP BY anonymous_id);
-- The events table gains sender_scope (whose message ids these are: 'user:' + user id for a
-- signed-in user, 'anon:' + anonymous id for an anonymous browser, 'server' for the write key
-- and the service role, the source's name for events a plugin records, e.g. 'billing'), and
-- message_id is unique per scope instead of globally: in the dialect files (041_*.postgresql.sql,
-- 041_*.sqlite.sql), since SQLite cannot drop a column's UNIQUE without rebuilding the table.
