-- Loopgate schema, PostgreSQL flavour: the same tables as migrations/sqlite, kept in step.
--
-- Conventions:
-- * Times are BIGINT milliseconds since the Unix epoch, UTC: compact, cheap to index and compare,
--   and the same on both backends (BIGINT there). Audit events keep their RFC 3339 `at` text as
--   well, because the hash covers the exact text.
-- * Ids are UUIDv7 text: time-ordered, so inserts append to the primary-key b-tree.
-- * JSON columns hold serialized JSON text; the store parses it on read.
-- * Every row carries its workspace, and every index starts with it: tenants never share a scan.

CREATE TABLE workspaces (
    name       TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
INSERT INTO workspaces (name, created_at) VALUES ('default', (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT);

-- API keys: only the SHA-256 of the token is kept, so a database leak does not leak credentials.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    workspace  TEXT NOT NULL REFERENCES workspaces(name),
    name       TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('agent', 'reviewer', 'admin')),
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- Console users; passwords as argon2id PHC strings.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    workspace     TEXT NOT NULL REFERENCES workspaces(name),
    username      TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('reviewer', 'admin')),
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (workspace, username)
);

-- Every policy ever in force, so each decision can name the exact version that made it.
CREATE TABLE policies (
    workspace  TEXT NOT NULL REFERENCES workspaces(name),
    version    BIGINT NOT NULL,
    text       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (workspace, version)
);

CREATE TABLE actions (
    id                 TEXT PRIMARY KEY,
    workspace          TEXT NOT NULL REFERENCES workspaces(name),
    agent              TEXT NOT NULL,
    name               TEXT NOT NULL,
    -- `arguments` are the final ones (a reviewer may edit); `proposed_arguments` what the agent sent.
    arguments          TEXT NOT NULL,
    proposed_arguments TEXT NOT NULL,
    confidence         DOUBLE PRECISION,
    context            TEXT NOT NULL,
    conversation_id    TEXT,
    status             TEXT NOT NULL,
    rule               TEXT,
    reason             TEXT NOT NULL,
    policy_version     BIGINT NOT NULL,
    review_id          TEXT,
    created_at         BIGINT NOT NULL,
    decided_at         BIGINT
);
CREATE INDEX actions_by_workspace ON actions (workspace, created_at);

-- Idempotency: one row per (workspace, agent, key). The request hash lets a replay with a
-- different body be refused instead of silently answered with the first action.
CREATE TABLE idempotency_keys (
    workspace    TEXT NOT NULL,
    agent        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    action_id    TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace, agent, key)
);

CREATE TABLE reviews (
    id                 TEXT PRIMARY KEY,
    workspace          TEXT NOT NULL REFERENCES workspaces(name),
    kind               TEXT NOT NULL,
    status             TEXT NOT NULL,
    queue              TEXT NOT NULL,
    priority           BIGINT NOT NULL,
    due_at             BIGINT,
    -- due_at, or the largest integer when there is none: `next` orders by it with a plain index,
    -- putting reviews without an SLA after those with one.
    due_key            BIGINT NOT NULL,
    on_timeout         TEXT,
    approvals_required BIGINT NOT NULL,
    -- Distinct approvals of the current version so far (see loopgate_domain::review::decide).
    approvals          BIGINT NOT NULL DEFAULT 0,
    rule               TEXT,
    reason             TEXT NOT NULL,
    policy_version     BIGINT NOT NULL,
    action_id          TEXT,
    claimed_by         TEXT,
    claim_expires_at   BIGINT,
    created_at         BIGINT NOT NULL,
    decided_at         BIGINT,
    outcome            TEXT
);
-- `next` is one probe of these: most urgent pending review, in a queue or in any.
CREATE INDEX reviews_next_in_queue ON reviews (workspace, status, queue, priority DESC, due_key, created_at);
CREATE INDEX reviews_next_any ON reviews (workspace, status, priority DESC, due_key, created_at);
-- Timers: open reviews by due time, and claims by lease expiry.
CREATE INDEX reviews_due ON reviews (due_at) WHERE due_at IS NOT NULL AND status IN ('pending', 'claimed');
CREATE INDEX reviews_leases ON reviews (claim_expires_at) WHERE status = 'claimed';
CREATE INDEX reviews_by_action ON reviews (action_id) WHERE action_id IS NOT NULL;

CREATE TABLE decisions (
    id         TEXT PRIMARY KEY,
    review_id  TEXT NOT NULL REFERENCES reviews(id),
    workspace  TEXT NOT NULL,
    reviewer   TEXT NOT NULL,
    verdict    TEXT NOT NULL,
    arguments  TEXT,
    text       TEXT,
    grade      TEXT,
    score      DOUBLE PRECISION,
    labels     TEXT NOT NULL,
    comment    TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX decisions_by_review ON decisions (review_id, created_at);

-- The stop button. agent = '' pauses the whole workspace.
CREATE TABLE pauses (
    workspace TEXT NOT NULL REFERENCES workspaces(name),
    agent     TEXT NOT NULL,
    mode      TEXT NOT NULL CHECK (mode IN ('review', 'block')),
    reason    TEXT NOT NULL,
    set_by    TEXT NOT NULL,
    set_at    BIGINT NOT NULL,
    PRIMARY KEY (workspace, agent)
);

-- The audit log: a hash chain per workspace (see loopgate_domain::audit).
CREATE TABLE events (
    workspace TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    at        TEXT NOT NULL,
    at_ms     BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    type      TEXT NOT NULL,
    subject   TEXT NOT NULL,
    data      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    PRIMARY KEY (workspace, seq)
);
-- The chain's head, written in the same transaction as each event: it makes the next append one
-- key lookup, and lets `audit verify` notice events deleted from the end of the log.
CREATE TABLE audit_heads (
    workspace TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL,
    hash      TEXT NOT NULL
);
