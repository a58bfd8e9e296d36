-- message_id dedupe per sender (see 041_analytics_scopes.sql). Existing rows get the scope their
-- source implies; they were unique globally, so they are unique per scope too.
ALTER TABLE analytics_events ADD COLUMN sender_scope TEXT;
UPDATE analytics_events SET sender_scope = CASE source
    WHEN 'user' THEN 'user:' || COALESCE(user_id, '')
    WHEN 'anonymous' THEN 'anon:' || COALESCE(anonymous_id, '')
    ELSE source END;
ALTER TABLE analytics_events ALTER COLUMN sender_scope SET NOT NULL;
ALTER TABLE analytics_events DROP CONSTRAINT analytics_events_message_id_key;
CREATE UNIQUE INDEX analytics_events_scope_message ON analytics_events (sender_scope, message_id);
