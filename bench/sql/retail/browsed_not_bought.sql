-- browsed_not_bought: 2+ web visits in the last 30 days to a /product/ page whose product
-- (web_visit.product_id) is electronics or home, and no order in the last 30 days.
SELECT DISTINCT i.individual_id
FROM individual i
WHERE i.individual_id IS NOT NULL
  AND i.individual_id IN (
        SELECT w.individual_id
        FROM web_visit w
        WHERE w.individual_id IS NOT NULL
          AND w.visited_at >= TIMESTAMPTZ '2026-10-02 00:00:00+00'
          AND w.visited_at <= TIMESTAMPTZ '2026-11-01 00:00:00+00'
          AND starts_with(w.page, '/product/')
          AND EXISTS (
                SELECT 1 FROM product p
                WHERE p.product_id = w.product_id
                  AND p.category IN ('electronics', 'home'))
        GROUP BY w.individual_id
        HAVING count(*) >= 2)
  AND NOT EXISTS (
        SELECT 1 FROM "order" o
        WHERE o.individual_id = i.individual_id
          AND o.ordered_at >= TIMESTAMPTZ '2026-10-02 00:00:00+00'
          AND o.ordered_at <= TIMESTAMPTZ '2026-11-01 00:00:00+00')
