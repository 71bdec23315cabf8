-- support-control-plane on PostgreSQL, schema version 1.
--
-- Each row holds the same postcard encoding as the redb store; the columns
-- beside it are what the queries select on. Tunnel ids (u64) are stored as
-- BIGINT with their top bit flipped, so BIGINT order is id order (the
-- admin's list pages in id order on both stores).

CREATE TABLE tunnels (
    id         BIGINT  PRIMARY KEY,
    state      TEXT    NOT NULL,
    -- Live tunnels only: the expiry sweeper's index.
    expires_at BIGINT,
    -- Ended tunnels only: when they ended, the retention purge's index.
    ended_at   BIGINT,
    -- Whether an approval was ever stored (never-approved ones go sooner).
    approved   BOOLEAN NOT NULL,
    record     BYTEA   NOT NULL
);
CREATE INDEX tunnels_expiry ON tunnels (expires_at, id) WHERE expires_at IS NOT NULL;
CREATE INDEX tunnels_ended ON tunnels (ended_at, id) WHERE ended_at IS NOT NULL;
CREATE INDEX tunnels_state ON tunnels (state, id);

-- Tunnels per state, kept with every change so metrics never scan.
CREATE TABLE state_counts (
    state TEXT   PRIMARY KEY,
    n     BIGINT NOT NULL
);

CREATE TABLE admins (
    name   TEXT  PRIMARY KEY,
    key    BYTEA NOT NULL UNIQUE,
    record BYTEA NOT NULL
);

CREATE TABLE handoff_keys (
    name TEXT  PRIMARY KEY,
    key  BYTEA NOT NULL
);

CREATE TABLE handoffs (
    tunnel_id BIGINT PRIMARY KEY,
    to_name   TEXT   NOT NULL,
    record    BYTEA  NOT NULL
);
CREATE INDEX handoffs_to ON handoffs (to_name, tunnel_id);

CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    tunnel_id BIGINT,
    record    BYTEA  NOT NULL
);
CREATE INDEX audit_tunnel ON audit (tunnel_id, seq) WHERE tunnel_id IS NOT NULL;

-- The audit chain's head: one row, locked by every append, so writers on
-- several replicas extend one linear chain.
CREATE TABLE audit_head (
    one  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    seq  BIGINT  NOT NULL,
    hash BYTEA   NOT NULL
);
INSERT INTO audit_head (seq, hash) VALUES (0, decode(repeat('00', 32), 'hex'));
