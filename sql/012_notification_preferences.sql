-- The platform's per-kind mail switches (its profiles.notification_preferences): a JSON object
-- of the keys a learner set (welcome_emails, payment_emails, achievement_emails, billing_emails,
-- progress_emails, referral_emails), each true or false; NULL: none set (every kind on).
-- Written only through update_profile, which validates it. Beside email_preferences (per category).
ALTER TABLE profiles ADD COLUMN notification_preferences TEXT;
