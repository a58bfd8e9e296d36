-- Revenue is net: a payment counts its amount less what was refunded or lost in disputes (on the
-- payment's day). Same SELECT body as 040_payments_links.postgresql.sql: change both together.
DROP VIEW analytics_business_revenue_daily;
CREATE VIEW analytics_business_revenue_daily AS
SELECT p.created / 86400 * 86400 AS day, p.currency AS currency,
       SUM(p.amount - p.amount_refunded - p.amount_lost) AS revenue, COUNT(*) AS payments,
       SUM(CASE WHEN pr.referred_by IS NOT NULL THEN p.amount - p.amount_refunded - p.amount_lost ELSE 0 END)
           AS referral_revenue,
       SUM(p.amount) AS gross, SUM(p.amount_refunded + p.amount_lost) AS refunded
FROM payments p LEFT JOIN profiles pr ON pr.id = p.user_id
WHERE p.status = 'succeeded'
GROUP BY p.created / 86400 * 86400, p.currency;
