-- The credit ledger: every movement of a tenant's credits is a row, so a
-- tenant's balance always equals the sum of its rows' amounts, and what it
-- has held the sum of their held (keygatectl ledger-verify checks both).
-- Amounts are micro-credits, signed, as the balance and the held sum moved:
--
--   opening       what a tenant had when the ledger began
--   mint          credits the root tenant created     amount +n
--   transfer_in   from the tenant above (counterpart) amount +n
--   transfer_out  to a tenant below (counterpart)     amount -n
--   hold          a call's estimate held              held +n
--   charge        the hold settled to the usage       amount -charged, held -n
--   release       the hold let go: nothing produced   held -n
--   expiry        the hold of a process that died, or
--                 past its deadline, let go           held -n
--
-- Rows are only ever inserted; a purged tenant's rows go with it.
CREATE TABLE credit_ledger (
    id              bigserial PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    kind            text NOT NULL CHECK (kind IN ('opening', 'mint',
                        'transfer_in', 'transfer_out', 'hold', 'charge',
                        'release', 'expiry')),
    amount          bigint NOT NULL DEFAULT 0,
    held            bigint NOT NULL DEFAULT 0,
    reservation_id  uuid,
    request_id      text,
    counterpart     uuid,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_ledger_tenant_idx ON credit_ledger (tenant_id, id);

INSERT INTO credit_ledger (tenant_id, kind, amount, held)
    SELECT id, 'opening', credits_balance, credits_reserved FROM tenants
    WHERE credits_balance <> 0 OR credits_reserved <> 0;
