-- One payment is one payment on every Stripe API version; refunds, lost disputes, reversals.
-- (vibe/billing/payments.py, vibe/billing/refunds.py)

-- Every name a succeeded payment goes by (`pi:<PaymentIntent>`, `in:<invoice>`, `cs:<session>`),
-- and the row lock that serialises events about the same money. payment_id is NULL while the
-- name is only locked, not yet recorded.
CREATE TABLE payment_keys (
    key TEXT PRIMARY KEY,
    payment_id BIGINT REFERENCES payments (id)
);
CREATE INDEX payment_keys_payment ON payment_keys (payment_id);
INSERT INTO payment_keys (key, payment_id)
SELECT dedupe_key, id FROM payments WHERE status = 'succeeded' ON CONFLICT (key) DO NOTHING;
INSERT INTO payment_keys (key, payment_id)
SELECT 'pi:' || payment_intent_id, MIN(id) FROM payments WHERE status = 'succeeded' AND payment_intent_id IS NOT NULL
GROUP BY payment_intent_id ON CONFLICT (key) DO NOTHING;
INSERT INTO payment_keys (key, payment_id)
SELECT 'in:' || invoice_id, MIN(id) FROM payments WHERE status = 'succeeded' AND invoice_id IS NOT NULL
GROUP BY invoice_id ON CONFLICT (key) DO NOTHING;

-- An invoice and the PaymentIntent that paid it: from invoice_payment.paid (API 2025-03-31 and
-- later), or from an event of an older version that names both.
CREATE TABLE payment_links (
    invoice_id TEXT NOT NULL,
    payment_intent_id TEXT NOT NULL,
    invoice_payment_id TEXT,
    source_event_id TEXT NOT NULL,
    created BIGINT NOT NULL,
    PRIMARY KEY (invoice_id, payment_intent_id)
);
CREATE INDEX payment_links_intent ON payment_links (payment_intent_id);

-- A charge's refunds as Stripe last said (cumulative amount_refunded; the largest seen wins),
-- stored even before its payment is known, then applied to it (payment_id).
CREATE TABLE refunds (
    charge_id TEXT PRIMARY KEY,
    payment_intent_id TEXT,
    payment_id BIGINT REFERENCES payments (id),
    amount BIGINT NOT NULL,
    amount_refunded BIGINT NOT NULL,
    currency TEXT NOT NULL,
    full_refund BOOLEAN NOT NULL,
    source_event_id TEXT NOT NULL,
    created BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX refunds_intent ON refunds (payment_intent_id);
CREATE INDEX refunds_payment ON refunds (payment_id);
CREATE INDEX disputes_charge ON disputes (charge_id);
CREATE INDEX disputes_intent ON disputes (payment_intent_id);

-- What went back of a payment: refunded, and lost in disputes. Its net is amount less both.
ALTER TABLE payments ADD COLUMN amount_refunded BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN amount_lost BIGINT NOT NULL DEFAULT 0;
CREATE INDEX payments_invoice ON payments (invoice_id);

-- A commission reversed (its payment fully refunded or lost in a dispute): once, never deleted.
CREATE TABLE commission_reversals (
    id BIGSERIAL PRIMARY KEY,
    commission_id BIGINT NOT NULL UNIQUE REFERENCES commissions (id),
    payment_id BIGINT NOT NULL REFERENCES payments (id),
    referrer_id TEXT NOT NULL REFERENCES profiles (id),
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    reason TEXT NOT NULL,
    source_event_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX commission_reversals_referrer ON commission_reversals (referrer_id);
