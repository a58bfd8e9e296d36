-- User management (issue 3): progress, achievements, access rules, manual subscription audit.

-- Tiers in order: an item needing tier X is open to every tier of that rank or above.
CREATE TABLE access_tiers (
    tier TEXT PRIMARY KEY,
    rank INTEGER NOT NULL
);
INSERT INTO access_tiers (tier, rank) VALUES ('free', 0), ('starter', 1), ('pro', 2), ('expert', 3), ('admin', 100);

-- Which subscription statuses keep the paid tier, and for how long after the period ends.
-- A status not listed here does not (canceled, unpaid, incomplete...). A profile without a
-- status (a tier set by hand) keeps its tier.
CREATE TABLE access_status_rules (
    status TEXT PRIMARY KEY,
    grace_seconds BIGINT
);
INSERT INTO access_status_rules (status, grace_seconds) VALUES ('active', NULL), ('trialing', NULL), ('past_due', 604800);

-- The content catalogue as access rules: which tier opens which item. Ids are strings.
CREATE TABLE access_rules (
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    required_tier TEXT NOT NULL REFERENCES access_tiers (tier),
    PRIMARY KEY (resource_type, resource_id)
);
INSERT INTO access_rules (resource_type, resource_id, required_tier) VALUES
    ('commandment', '1', 'free'), ('commandment', '2', 'free'), ('commandment', '3', 'free'),
    ('commandment', '4', 'starter'), ('commandment', '5', 'starter'), ('commandment', '6', 'starter'),
    ('commandment', '7', 'starter'), ('commandment', '8', 'pro'), ('commandment', '9', 'pro'),
    ('commandment', '10', 'pro'),
    ('workshop', '1', 'free'), ('workshop', '2', 'free'), ('workshop', '3', 'starter'),
    ('workshop', '4', 'starter'), ('workshop', '5', 'starter'), ('workshop', '6', 'pro'),
    ('workshop', '7', 'pro'), ('workshop', '8', 'pro'), ('workshop', '9', 'expert'),
    ('workshop', '10', 'expert'),
    ('template', '1', 'free'), ('template', '2', 'free'), ('template', '3', 'free'),
    ('template', '4', 'pro'), ('template', '5', 'pro'), ('template', '6', 'pro'),
    ('template', '7', 'expert'), ('template', '8', 'expert'), ('template', '9', 'expert'),
    ('template', '10', 'expert');

-- One row per learner and item; status only moves forward (not_started < in_progress < completed).
CREATE TABLE user_progress (
    user_id TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    status TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    completed_at DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, resource_type, resource_id)
);

-- Achievements as data: unlocked when the learner has completed `threshold` items of
-- `resource_type` (any type when NULL); a NULL threshold means every item of that type.
CREATE TABLE achievements (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    resource_type TEXT,
    threshold INTEGER
);
INSERT INTO achievements (key, name, description, resource_type, threshold) VALUES
    ('first_commandment', 'First commandment', 'Completed a first commandment.', 'commandment', 1),
    ('all_commandments', 'All ten commandments', 'Completed every commandment.', 'commandment', NULL),
    ('first_workshop', 'First workshop', 'Completed a first workshop.', 'workshop', 1),
    ('five_workshops', 'Five workshops', 'Completed five workshops.', 'workshop', 5),
    ('all_workshops', 'Workshop master', 'Completed every workshop.', 'workshop', NULL),
    ('first_template', 'First template', 'Completed a first template.', 'template', 1),
    ('ten_items', 'Ten down', 'Completed ten items of any kind.', NULL, 10);

CREATE TABLE user_achievements (
    user_id TEXT NOT NULL,
    achievement_key TEXT NOT NULL REFERENCES achievements (key),
    unlocked_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, achievement_key)
);

-- Tiers set by hand (comp access, support), with who did it and why.
CREATE TABLE subscription_audit (
    id BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    old_tier TEXT,
    new_tier TEXT NOT NULL,
    old_status TEXT,
    new_status TEXT,
    reason TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX subscription_audit_user ON subscription_audit (user_id, created_at);
