-- The Stripe inbox: every verified event, raw, exactly once (keyed by Stripe's event id).
-- status: pending -> processed | ignored | skipped | waiting | failed -> dead
CREATE TABLE stripe_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    created BIGINT NOT NULL,
    livemode BOOLEAN NOT NULL,
    account TEXT,
    api_version TEXT,
    object_id TEXT,
    payload TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION,
    waiting_for TEXT,
    last_error TEXT,
    note TEXT,
    processed_at DOUBLE PRECISION
);
CREATE INDEX stripe_events_due ON stripe_events (next_attempt_at) WHERE status IN ('pending', 'failed', 'waiting');
CREATE INDEX stripe_events_waiting ON stripe_events (waiting_for) WHERE status = 'waiting';
CREATE INDEX stripe_events_status_type ON stripe_events (status, type);

-- The newest event applied to each Stripe object, so an older one never overwrites it.
CREATE TABLE stripe_object_versions (
    object_id TEXT PRIMARY KEY,
    event_created BIGINT NOT NULL,
    event_rank INTEGER NOT NULL,
    event_id TEXT NOT NULL
);

CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES profiles (id),
    customer_id TEXT,
    status TEXT NOT NULL,
    tier TEXT NOT NULL,
    price_id TEXT,
    amount BIGINT,
    currency TEXT,
    billing_interval TEXT,
    current_period_end BIGINT,
    cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
    started_at BIGINT,
    ended_at BIGINT,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX subscriptions_user ON subscriptions (user_id);

-- Money, in the currency's smallest unit, recorded once per payment (dedupe_key: the
-- PaymentIntent when known, else the invoice or checkout session; failures per attempt).
CREATE TABLE payments (
    id BIGSERIAL PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    user_id TEXT REFERENCES profiles (id),
    customer_id TEXT,
    status TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    invoice_id TEXT,
    payment_intent_id TEXT,
    charge_id TEXT,
    checkout_session_id TEXT,
    subscription_id TEXT,
    failure_message TEXT,
    source_event_id TEXT NOT NULL,
    created BIGINT NOT NULL,
    recorded_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX payments_user ON payments (user_id);
CREATE INDEX payments_charge ON payments (charge_id);
CREATE INDEX payments_intent ON payments (payment_intent_id);

CREATE TABLE disputes (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES profiles (id),
    charge_id TEXT,
    payment_intent_id TEXT,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    reason TEXT,
    status TEXT,
    source_event_id TEXT NOT NULL,
    created BIGINT NOT NULL,
    recorded_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX disputes_user ON disputes (user_id);

-- Referral commissions: one per payment of a referred user.
CREATE TABLE commissions (
    id BIGSERIAL PRIMARY KEY,
    payment_id BIGINT NOT NULL UNIQUE REFERENCES payments (id),
    referrer_id TEXT NOT NULL REFERENCES profiles (id),
    referred_user_id TEXT NOT NULL REFERENCES profiles (id),
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    rate DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX commissions_referrer ON commissions (referrer_id);
