-- The email queue: one row per message, keyed by its idempotency key (the cause: a payment,
-- a user, a week), so the same cause never queues two messages.
-- status: queued -> sending -> sent -> delivered | bounced | complained; failed (retry due),
-- dead (gave up), suppressed (never sent: unsubscribed or on the suppression list).
CREATE TABLE email_messages (
    id BIGSERIAL PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    user_id TEXT,
    recipient TEXT NOT NULL,
    type TEXT NOT NULL,
    category TEXT NOT NULL,
    data TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION,
    claimed_at DOUBLE PRECISION,
    message_id TEXT NOT NULL,
    provider_id TEXT,
    last_error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    sent_at DOUBLE PRECISION
);
CREATE INDEX email_messages_due ON email_messages (next_attempt_at) WHERE status IN ('queued', 'failed');
CREATE INDEX email_messages_sending ON email_messages (claimed_at) WHERE status = 'sending';
CREATE INDEX email_messages_provider ON email_messages (provider_id);
CREATE INDEX email_messages_user ON email_messages (user_id, type, created_at);
CREATE INDEX email_messages_status ON email_messages (status);

-- Every status change of a message, timestamped.
CREATE TABLE email_message_events (
    id BIGSERIAL PRIMARY KEY,
    email_id BIGINT NOT NULL REFERENCES email_messages (id),
    status TEXT NOT NULL,
    detail TEXT,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX email_message_events_email ON email_message_events (email_id, id);

-- Addresses never to mail again (hard bounces, complaints, an operator's decision).
CREATE TABLE email_suppressions (
    email TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    source TEXT,
    created_at DOUBLE PRECISION NOT NULL
);

-- A user's choice per category; no row means subscribed. Transactional mail ignores it.
CREATE TABLE email_preferences (
    user_id TEXT NOT NULL,
    category TEXT NOT NULL,
    subscribed BOOLEAN NOT NULL,
    source TEXT,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, category)
);

-- Delivery webhooks already applied (Svix redelivers; each svix-id counts once).
CREATE TABLE email_webhook_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    email_id BIGINT,
    received_at DOUBLE PRECISION NOT NULL
);
