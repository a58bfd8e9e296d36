-- Issue 16: Stripe both ways.
--
-- stripe_events.source: where a stored event came from. `webhook` (Stripe delivered it; every
-- event stored before this migration), `api` (catch-up listed it from GET /v1/events), or
-- `reconcile` (`stripe reconcile --fix` made it from Stripe's current object). The first copy
-- stored keeps its source: a webhook arriving after catch-up stored its event is a duplicate.
ALTER TABLE stripe_events ADD COLUMN source TEXT NOT NULL DEFAULT 'webhook';

-- What the Stripe sync remembers between passes: `catchup` (value: the `created` of the newest
-- event a full pass saw; holder/lease_until: the instance doing a pass now, so one at a time).
CREATE TABLE stripe_sync_state (
    name TEXT PRIMARY KEY,
    value TEXT,
    holder TEXT,
    lease_until DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL
);
