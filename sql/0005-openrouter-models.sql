-- The OpenRouter id of each native model id, for the calls that go through
-- OpenRouter although the client named a native model (a tenant's own
-- OpenRouter key, sent along or stored, and the operator's pool).  A native
-- model without a row is never sent to OpenRouter: keygate answers 400
-- model_not_available rather than guess an id.  Operators keep the table
-- with `keygatectl openrouter-models list | set | import`.
CREATE TABLE openrouter_models (
    model          text PRIMARY KEY
                   CHECK (model <> '' AND length(model) <= 200
                          AND strpos(model, '/') = 0
                          AND strpos(model, '*') = 0),
    openrouter_id  text NOT NULL
                   CHECK (length(openrouter_id) <= 200
                          AND openrouter_id ~ '^[^/*[:space:]]+/[^/*[:space:]]+$'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- OpenRouter's public model ids (openrouter.ai/<vendor>/<model>) for the
-- OpenAI, Anthropic and Google models keygate routes, as OpenRouter listed
-- them on 2026-12-03.  Only ids confirmed on OpenRouter's own model pages
-- are here; add others with keygatectl openrouter-models set.
INSERT INTO openrouter_models (model, openrouter_id) VALUES
    ('gpt-4o',                      'openai/gpt-4o'),
    ('gpt-4o-2024-05-13',           'openai/gpt-4o-2024-05-13'),
    ('gpt-4o-mini',                 'openai/gpt-4o-mini'),
    ('gpt-4o-mini-2024-07-18',      'openai/gpt-4o-mini-2024-07-18'),
    ('gpt-4.1',                     'openai/gpt-4.1'),
    ('o3-mini',                     'openai/o3-mini'),
    ('o4-mini',                     'openai/o4-mini'),
    ('claude-3-5-haiku-latest',     'anthropic/claude-3.5-haiku'),
    ('claude-3-5-sonnet-latest',    'anthropic/claude-3.5-sonnet'),
    ('claude-3-7-sonnet-latest',    'anthropic/claude-3.7-sonnet'),
    ('claude-sonnet-4-0',           'anthropic/claude-sonnet-4'),
    ('claude-sonnet-4-20250514',    'anthropic/claude-sonnet-4'),
    ('claude-sonnet-4-5',           'anthropic/claude-sonnet-4.5'),
    ('claude-sonnet-4-5-20250929',  'anthropic/claude-sonnet-4.5'),
    ('gemini-1.5-flash',            'google/gemini-flash-1.5'),
    ('gemini-1.5-pro',              'google/gemini-pro-1.5'),
    ('gemini-2.0-flash',            'google/gemini-2.0-flash-001'),
    ('gemini-2.0-flash-001',        'google/gemini-2.0-flash-001'),
    ('gemini-2.0-flash-lite',       'google/gemini-2.0-flash-lite-001'),
    ('gemini-2.0-flash-lite-001',   'google/gemini-2.0-flash-lite-001'),
    ('gemini-2.5-flash',            'google/gemini-2.5-flash'),
    ('gemini-2.5-flash-lite',       'google/gemini-2.5-flash-lite')
ON CONFLICT (model) DO NOTHING;
