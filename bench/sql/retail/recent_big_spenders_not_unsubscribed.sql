-- recent_big_spenders_not_unsubscribed: country in (US, CA), orders of the last 30 days summing
-- over 100, and no unsubscribe email event ever. as_of = 2026-11-01T00:00:00Z.
SELECT DISTINCT i.individual_id
FROM individual i
WHERE i.individual_id IS NOT NULL
  AND i.country IN ('US', 'CA')
  AND i.individual_id IN (
        SELECT o.individual_id
        FROM "order" o
        WHERE o.individual_id IS NOT NULL
          AND o.ordered_at >= TIMESTAMPTZ '2026-10-02 00:00:00+00'
          AND o.ordered_at <= TIMESTAMPTZ '2026-11-01 00:00:00+00'
        GROUP BY o.individual_id
        HAVING sum(o.amount) > 100)
  AND NOT EXISTS (
        SELECT 1 FROM email_event e
        WHERE e.individual_id = i.individual_id AND e.kind = 'unsubscribe')
