-- Credits: request ids come from clients (X-Request-Id) and need not be
-- unique, so reservations and usage rows are keyed by their own ids.
ALTER TABLE usage DROP CONSTRAINT usage_request_id_key;
ALTER TABLE credit_reservations DROP CONSTRAINT credit_reservations_request_id_key;
CREATE INDEX usage_request_idx ON usage (request_id);
CREATE INDEX credit_reservations_request_idx ON credit_reservations (request_id);

-- Default prices, in micro-credits per million tokens (1 credit =
-- 1 000 000 micro-credits).  The longest matching pattern wins; '*' is the
-- price of every model no other pattern matches.  keygatectl-free: operators
-- change them with SQL or a later migration.
INSERT INTO prices (pattern, input_per_mtok, output_per_mtok) VALUES
    ('*',                   1000000,  3000000),
    ('gpt-4o*',             2500000, 10000000),
    ('gpt-4o-mini*',         150000,   600000),
    ('gpt-4.1*',            2000000,  8000000),
    ('o3*',                 2000000,  8000000),
    ('o4-mini*',            1100000,  4400000),
    ('claude-*',            3000000, 15000000),
    ('claude-3-5-haiku*',    800000,  4000000),
    ('gemini-*',             300000,  2500000),
    ('gemini-2.0-flash*',    100000,   400000)
ON CONFLICT (pattern) DO NOTHING;
