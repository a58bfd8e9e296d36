-- The queue's order: priority first (0 urgent, 1 high, 2 normal, 3 low; urgent and
-- send_immediately are 0), then when the message is due. The index serves the claim's
-- ORDER BY priority, next_attempt_at over the messages that may be sent.
ALTER TABLE email_messages ADD COLUMN priority SMALLINT NOT NULL DEFAULT 2;
DROP INDEX email_messages_due;
CREATE INDEX email_messages_due ON email_messages (priority, next_attempt_at) WHERE status IN ('queued', 'failed');
