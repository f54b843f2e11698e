-- multi_category_shoppers: born 1980-01-01..1999-12-31 (inclusive), and the products reached
-- through order -> order_line -> product span 4+ distinct non-NULL categories.
SELECT DISTINCT i.individual_id
FROM individual i
WHERE i.individual_id IS NOT NULL
  AND i.birth_date BETWEEN DATE '1980-01-01' AND DATE '1999-12-31'
  AND i.individual_id IN (
        SELECT o.individual_id
        FROM "order" o
        JOIN order_line ol ON ol.order_id = o.order_id
        JOIN product p ON p.product_id = ol.product_id
        WHERE o.individual_id IS NOT NULL
        GROUP BY o.individual_id
        HAVING count(DISTINCT p.category) >= 4)
