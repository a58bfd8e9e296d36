-- Row-level security for user tables (issue 3). The service runs user-scoped work as the
-- restricted role DATABASE_RLS_ROLE ({rls_role}: vibe_user for the schema vibe), with the user's
-- id in the setting vibe.user_id for the transaction (SET LOCAL ROLE; set_config(..., true)): a
-- query that forgot its WHERE user_id = ... still sees only that user's rows. The owner role (the
-- service's own login) is not subject to these policies; Stripe processing and admin work run as
-- the owner. The role is server-wide: it is created only when missing (which needs CREATEROLE; a
-- DBA may create it instead and grant it to the owner), and granted rights only in {schema}.
DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {rls_role_literal}) THEN EXECUTE format('CREATE ROLE %I NOLOGIN', {rls_role_literal}); END IF; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; WHEN insufficient_privilege THEN RAISE EXCEPTION 'cannot create the row-security role %: the database user % needs CREATEROLE, or a DBA runs: CREATE ROLE % NOLOGIN; GRANT % TO %', {rls_role_literal}, current_user, {rls_role_literal}, {rls_role_literal}, current_user USING ERRCODE = 'insufficient_privilege'; END $$;
DO $$ BEGIN IF NOT pg_has_role(current_user, {rls_role_literal}, 'MEMBER') THEN EXECUTE format('GRANT %I TO %I', {rls_role_literal}, current_user); END IF; EXCEPTION WHEN insufficient_privilege THEN RAISE EXCEPTION 'the database user % is not a member of the row-security role % and cannot make itself one: a DBA runs GRANT % TO %', current_user, {rls_role_literal}, {rls_role_literal}, current_user USING ERRCODE = 'insufficient_privilege'; END $$;
GRANT USAGE ON SCHEMA {schema} TO {rls_role};
GRANT SELECT, INSERT, UPDATE ON user_progress, user_achievements TO {rls_role};
GRANT SELECT ON profiles, commissions, access_rules, access_tiers, access_status_rules, achievements TO {rls_role};
ALTER TABLE user_progress ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_achievements ENABLE ROW LEVEL SECURITY;
ALTER TABLE profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE commissions ENABLE ROW LEVEL SECURITY;
CREATE POLICY user_progress_own ON user_progress TO {rls_role}
    USING (user_id = current_setting('vibe.user_id', true))
    WITH CHECK (user_id = current_setting('vibe.user_id', true));
CREATE POLICY user_achievements_own ON user_achievements TO {rls_role}
    USING (user_id = current_setting('vibe.user_id', true))
    WITH CHECK (user_id = current_setting('vibe.user_id', true));
CREATE POLICY profiles_own ON profiles FOR SELECT TO {rls_role}
    USING (id = current_setting('vibe.user_id', true));
CREATE POLICY commissions_own ON commissions FOR SELECT TO {rls_role}
    USING (referrer_id = current_setting('vibe.user_id', true));
