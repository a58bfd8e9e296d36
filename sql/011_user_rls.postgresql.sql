-- Row-level security for user tables (issue 3). The service runs user-scoped work as the
-- restricted role vibe_user, with the user's id in the setting vibe.user_id for the
-- transaction (SET LOCAL ROLE; set_config(..., true)): a query that forgot its
-- WHERE user_id = ... still sees only that user's rows. The owner role (the service's own
-- login) is not subject to these policies; Stripe processing and admin work run as the owner.
DO $$ BEGIN CREATE ROLE vibe_user NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
DO $$ BEGIN IF NOT pg_has_role(current_user, 'vibe_user', 'MEMBER') THEN EXECUTE format('GRANT vibe_user TO %I', current_user); END IF; END $$;
DO $$ BEGIN EXECUTE format('GRANT USAGE ON SCHEMA %I TO vibe_user', current_schema()); END $$;
GRANT SELECT, INSERT, UPDATE ON user_progress, user_achievements TO vibe_user;
GRANT SELECT ON profiles, commissions, access_rules, access_tiers, access_status_rules, achievements TO vibe_user;
ALTER TABLE user_progress ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_achievements ENABLE ROW LEVEL SECURITY;
ALTER TABLE profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE commissions ENABLE ROW LEVEL SECURITY;
CREATE POLICY user_progress_own ON user_progress TO vibe_user
    USING (user_id = current_setting('vibe.user_id', true))
    WITH CHECK (user_id = current_setting('vibe.user_id', true));
CREATE POLICY user_achievements_own ON user_achievements TO vibe_user
    USING (user_id = current_setting('vibe.user_id', true))
    WITH CHECK (user_id = current_setting('vibe.user_id', true));
CREATE POLICY profiles_own ON profiles FOR SELECT TO vibe_user
    USING (id = current_setting('vibe.user_id', true));
CREATE POLICY commissions_own ON commissions FOR SELECT TO vibe_user
    USING (referrer_id = current_setting('vibe.user_id', true));
