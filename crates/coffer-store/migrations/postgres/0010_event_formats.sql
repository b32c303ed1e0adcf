-- The format an event's payload is written in, and so how its webhook is signed and what
-- acknowledges it: `coffer` (Coffer-Signature, any 2xx) or `gatepay` (X-GatePay-* headers
-- signed with the order's GatePay credential, {"returnCode":"SUCCESS"}). Events written
-- before this column existed are told apart by the name GatePay's notifications were given.
ALTER TABLE events ADD COLUMN format TEXT NOT NULL DEFAULT 'coffer';
UPDATE events SET format = 'gatepay' WHERE event_type LIKE 'gatepay.%';
