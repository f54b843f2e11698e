-- new_signups_without_order: signed up in the last 90 days, no order at all (count eq 0),
-- and opted in or with an address ending in @gmail.com.
SELECT DISTINCT i.individual_id
FROM individual i
WHERE i.individual_id IS NOT NULL
  AND i.signup_at >= TIMESTAMPTZ '2026-08-03 00:00:00+00'
  AND i.signup_at <= TIMESTAMPTZ '2026-11-01 00:00:00+00'
  AND NOT EXISTS (SELECT 1 FROM "order" o WHERE o.individual_id = i.individual_id)
  AND (i.email_opt_in = true OR ends_with(i.email, '@gmail.com'))
