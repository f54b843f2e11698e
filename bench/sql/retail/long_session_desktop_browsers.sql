-- long_session_desktop_browsers: country known and not US/us, a desktop visit of the last 90 days
-- lasting 600+ s (max over non-NULL durations), and completed orders averaging over 60.
SELECT DISTINCT i.individual_id
FROM individual i
WHERE i.individual_id IS NOT NULL
  AND i.country NOT IN ('US', 'us')
  AND i.individual_id IN (
        SELECT w.individual_id
        FROM web_visit w
        WHERE w.individual_id IS NOT NULL
          AND w.visited_at >= TIMESTAMPTZ '2026-08-03 00:00:00+00'
          AND w.visited_at <= TIMESTAMPTZ '2026-11-01 00:00:00+00'
          AND w.device = 'desktop'
        GROUP BY w.individual_id
        HAVING max(w.duration_s) >= 600)
  AND i.individual_id IN (
        SELECT o.individual_id
        FROM "order" o
        WHERE o.individual_id IS NOT NULL
          AND o.status = 'completed'
        GROUP BY o.individual_id
        HAVING avg(o.amount) > 60)
