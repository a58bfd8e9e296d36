-- Learners and administrators. Ids are Supabase Auth user ids (strings). Times are Unix seconds.
CREATE TABLE profiles (
    id TEXT PRIMARY KEY,
    email TEXT,
    full_name TEXT,
    display_name TEXT,
    avatar_url TEXT,
    locale TEXT,
    marketing_consent BOOLEAN NOT NULL DEFAULT FALSE,
    role TEXT NOT NULL DEFAULT 'user',
    tier TEXT NOT NULL DEFAULT 'free',
    subscription_status TEXT,
    current_period_end BIGINT,
    cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
    stripe_customer_id TEXT,
    stripe_subscription_id TEXT,
    referral_code TEXT UNIQUE,
    referred_by TEXT,
    needs_review BOOLEAN NOT NULL DEFAULT FALSE,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX profiles_email ON profiles (email);
CREATE INDEX profiles_referred_by ON profiles (referred_by);

-- Which user a Stripe customer belongs to (a user may have had several customers).
CREATE TABLE stripe_customers (
    customer_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES profiles (id),
    email TEXT,
    source_event_id TEXT,
    linked_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX stripe_customers_user ON stripe_customers (user_id);

-- Things an administrator should look at (disputes, ...).
CREATE TABLE review_flags (
    id BIGSERIAL PRIMARY KEY,
    user_id TEXT,
    reason TEXT NOT NULL,
    reference TEXT NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL,
    resolved_at DOUBLE PRECISION
);
