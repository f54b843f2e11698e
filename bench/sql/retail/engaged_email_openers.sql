-- engaged_email_openers: an email address, 3+ opens in the last 30 days (every physical event
-- row counts), and no bounce in the last 90 days.
SELECT DISTINCT i.individual_id
FROM individual i
WHERE i.individual_id IS NOT NULL
  AND i.email IS NOT NULL
  AND i.individual_id IN (
        SELECT e.individual_id
        FROM email_event e
        WHERE e.individual_id IS NOT NULL
          AND e.kind = 'open'
          AND e."at" >= TIMESTAMPTZ '2026-10-02 00:00:00+00'
          AND e."at" <= TIMESTAMPTZ '2026-11-01 00:00:00+00'
        GROUP BY e.individual_id
        HAVING count(*) >= 3)
  AND NOT EXISTS (
        SELECT 1 FROM email_event e
        WHERE e.individual_id = i.individual_id
          AND e.kind = 'bounce'
          AND e."at" >= TIMESTAMPTZ '2026-08-03 00:00:00+00'
          AND e."at" <= TIMESTAMPTZ '2026-11-01 00:00:00+00')
