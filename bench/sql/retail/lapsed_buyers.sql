-- lapsed_buyers: opted in, a non-cancelled order older than 180 days, no order in the last 180.
-- older_than 180d: ordered_at < as_of - 180d = 2026-05-05; within_last 180d: [2026-05-05, as_of].
SELECT DISTINCT i.individual_id
FROM individual i
WHERE i.individual_id IS NOT NULL
  AND i.email_opt_in = true
  AND EXISTS (
        SELECT 1 FROM "order" o
        WHERE o.individual_id = i.individual_id
          AND o.ordered_at < TIMESTAMPTZ '2026-05-05 00:00:00+00'
          AND o.status <> 'cancelled')
  AND NOT EXISTS (
        SELECT 1 FROM "order" o
        WHERE o.individual_id = i.individual_id
          AND o.ordered_at >= TIMESTAMPTZ '2026-05-05 00:00:00+00'
          AND o.ordered_at <= TIMESTAMPTZ '2026-11-01 00:00:00+00')
