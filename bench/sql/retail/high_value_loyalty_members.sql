-- high_value_loyalty_members: a gold/platinum loyalty account with 5000+ points, and completed
-- orders of the last 365 days summing to 500 or more.
SELECT DISTINCT i.individual_id
FROM individual i
WHERE i.individual_id IS NOT NULL
  AND EXISTS (
        SELECT 1 FROM loyalty_account l
        WHERE l.individual_id = i.individual_id
          AND l.tier IN ('gold', 'platinum')
          AND l.points >= 5000)
  AND i.individual_id IN (
        SELECT o.individual_id
        FROM "order" o
        WHERE o.individual_id IS NOT NULL
          AND o.status = 'completed'
          AND o.ordered_at >= TIMESTAMPTZ '2025-11-01 00:00:00+00'
          AND o.ordered_at <= TIMESTAMPTZ '2026-11-01 00:00:00+00'
        GROUP BY o.individual_id
        HAVING sum(o.amount) >= 500)
