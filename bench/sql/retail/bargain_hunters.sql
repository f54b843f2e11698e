-- bargain_hunters: (app orders not cancelled/returned whose smallest non-NULL amount is below 15,
-- or 3+ web visits to a page containing "sale") and gender not NULL.
SELECT DISTINCT i.individual_id
FROM individual i
WHERE i.individual_id IS NOT NULL
  AND (   i.individual_id IN (
                SELECT o.individual_id
                FROM "order" o
                WHERE o.individual_id IS NOT NULL
                  AND o.channel = 'app'
                  AND o.status NOT IN ('cancelled', 'returned')
                GROUP BY o.individual_id
                HAVING min(o.amount) < 15)
       OR i.individual_id IN (
                SELECT w.individual_id
                FROM web_visit w
                WHERE w.individual_id IS NOT NULL
                  AND contains(w.page, 'sale')
                GROUP BY w.individual_id
                HAVING count(*) >= 3))
  AND i.gender IS NOT NULL
