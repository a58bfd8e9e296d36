-- Business figures from the billing state the Stripe pipeline keeps. The SELECT bodies are the
-- same in 021_analytics_business.sqlite.sql: change both together.
-- PostgreSQL: materialized views, refreshed CONCURRENTLY on a schedule (ANALYTICS_REFRESH_SECONDS).

CREATE MATERIALIZED VIEW analytics_business_subscribers AS
SELECT tier, COALESCE(currency, '') AS currency, COUNT(DISTINCT user_id) AS active,
       SUM(CASE billing_interval
               WHEN 'year' THEN COALESCE(amount, 0) / 12.0
               WHEN 'week' THEN COALESCE(amount, 0) * 52 / 12.0
               WHEN 'day' THEN COALESCE(amount, 0) * 365 / 12.0
               ELSE COALESCE(amount, 0) * 1.0 END) AS mrr
FROM subscriptions
WHERE status IN ('active', 'trialing', 'past_due') AND user_id IS NOT NULL
GROUP BY tier, COALESCE(currency, '');
CREATE UNIQUE INDEX analytics_business_subscribers_key ON analytics_business_subscribers (tier, currency);

CREATE MATERIALIZED VIEW analytics_business_revenue_daily AS
SELECT p.created / 86400 * 86400 AS day, p.currency AS currency, SUM(p.amount) AS revenue,
       COUNT(*) AS payments,
       SUM(CASE WHEN pr.referred_by IS NOT NULL THEN p.amount ELSE 0 END) AS referral_revenue
FROM payments p LEFT JOIN profiles pr ON pr.id = p.user_id
WHERE p.status = 'succeeded'
GROUP BY p.created / 86400 * 86400, p.currency;
CREATE UNIQUE INDEX analytics_business_revenue_daily_key ON analytics_business_revenue_daily (day, currency);

CREATE MATERIALIZED VIEW analytics_business_flow_daily AS
SELECT day, SUM(started) AS new_subscribers, SUM(churned) AS churned_subscribers
FROM (
    SELECT started_at / 86400 * 86400 AS day, 1 AS started, 0 AS churned
    FROM subscriptions WHERE started_at IS NOT NULL
    UNION ALL
    SELECT ended_at / 86400 * 86400 AS day, 0 AS started, 1 AS churned
    FROM subscriptions WHERE ended_at IS NOT NULL AND status IN ('canceled', 'unpaid', 'incomplete_expired')
) flow
GROUP BY day;
CREATE UNIQUE INDEX analytics_business_flow_daily_key ON analytics_business_flow_daily (day);

CREATE MATERIALIZED VIEW analytics_business_conversion_daily AS
SELECT CAST(created_at AS BIGINT) / 86400 * 86400 AS day, COUNT(*) AS signups,
       SUM(CASE WHEN EXISTS (SELECT 1 FROM subscriptions s WHERE s.user_id = profiles.id AND s.started_at IS NOT NULL)
                THEN 1 ELSE 0 END) AS converted
FROM profiles
GROUP BY CAST(created_at AS BIGINT) / 86400 * 86400;
CREATE UNIQUE INDEX analytics_business_conversion_daily_key ON analytics_business_conversion_daily (day);
