-- Embedding models are priced on their input alone, in micro-credits per
-- million tokens, like every price (see 0003-credits.sql).  A longer
-- pattern wins, so gemini-embedding-* is not priced as a gemini-* chat.
INSERT INTO prices (pattern, input_per_mtok, output_per_mtok) VALUES
    ('text-embedding-3-small*',  20000, 0),
    ('text-embedding-3-large*', 130000, 0),
    ('text-embedding-ada-002*', 100000, 0),
    ('gemini-embedding-*',      150000, 0)
ON CONFLICT (pattern) DO NOTHING;
