-- recent_electronics_buyers: an order of the last 90 days, completed or pending, with a line
-- whose product is in category electronics (order -> order_line -> product).
SELECT DISTINCT i.individual_id
FROM individual i
WHERE i.individual_id IS NOT NULL
  AND EXISTS (
        SELECT 1 FROM "order" o
        WHERE o.individual_id = i.individual_id
          AND o.ordered_at >= TIMESTAMPTZ '2026-08-03 00:00:00+00'
          AND o.ordered_at <= TIMESTAMPTZ '2026-11-01 00:00:00+00'
          AND o.status IN ('completed', 'pending')
          AND EXISTS (
                SELECT 1
                FROM order_line ol
                JOIN product p ON p.product_id = ol.product_id
                WHERE ol.order_id = o.order_id
                  AND p.category = 'electronics'))
