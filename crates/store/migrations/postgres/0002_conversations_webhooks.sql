-- Live conversations, user feedback, webhooks and their transactional outbox.

CREATE TABLE conversations (
    id          TEXT PRIMARY KEY,
    workspace   TEXT NOT NULL REFERENCES workspaces(name),
    -- The agent that opened it; other agents of the workspace cannot post to it.
    agent       TEXT NOT NULL,
    -- The chatbot's own id for the conversation: creating it twice returns the first.
    external_id TEXT,
    context     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('ai', 'waiting', 'human', 'closed')),
    -- The human who took it over, while `human`.
    assignee    TEXT,
    -- Messages posted so far (the policy's `conversation.turns`).
    turns       BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX conversations_by_external_id ON conversations (workspace, agent, external_id)
    WHERE external_id IS NOT NULL;
CREATE INDEX conversations_recent ON conversations (workspace, updated_at);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    workspace       TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('user', 'ai', 'human', 'system')),
    -- What the end user sees (or would see): a reviewer's edit replaces the AI's draft, which
    -- is kept in `original_text`.
    text            TEXT NOT NULL,
    original_text   TEXT,
    confidence      DOUBLE PRECISION,
    status          TEXT NOT NULL CHECK (status IN ('delivered', 'held', 'escalated', 'discarded')),
    author          TEXT NOT NULL,
    rule            TEXT,
    reason          TEXT,
    policy_version  BIGINT,
    review_id       TEXT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, created_at);

-- Reviews about conversations point at them (escalations) and at the message (drafts, flags, QA).
ALTER TABLE reviews ADD COLUMN conversation_id TEXT;
ALTER TABLE reviews ADD COLUMN message_id TEXT;
CREATE INDEX reviews_by_conversation ON reviews (conversation_id) WHERE conversation_id IS NOT NULL;

CREATE TABLE feedback (
    id              TEXT PRIMARY KEY,
    workspace       TEXT NOT NULL,
    message_id      TEXT NOT NULL REFERENCES messages(id),
    conversation_id TEXT NOT NULL,
    rating          TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    comment         TEXT,
    review_id       TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX feedback_by_message ON feedback (message_id);

-- Webhook endpoints. The secret must stay usable for signing, so it is stored as given; the API
-- never returns it after creation.
CREATE TABLE webhooks (
    id              TEXT PRIMARY KEY,
    workspace       TEXT NOT NULL REFERENCES workspaces(name),
    url             TEXT NOT NULL,
    secret          TEXT NOT NULL,
    -- JSON array of event types; "*" or "review.*" style prefixes match many.
    events          TEXT NOT NULL,
    format          TEXT NOT NULL CHECK (format IN ('standard', 'slack')),
    status          TEXT NOT NULL CHECK (status IN ('active', 'disabled', 'deleted')),
    disabled_reason TEXT,
    created_at      BIGINT NOT NULL,
    created_by      TEXT NOT NULL
);
CREATE INDEX webhooks_active ON webhooks (workspace) WHERE status = 'active';

-- The transactional outbox: one row per (event, endpoint), written in the transaction that wrote
-- the event, so a committed event is never lost for a subscriber and an uncommitted one never
-- sent. The row is also the delivery log.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    workspace       TEXT NOT NULL,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id),
    event_seq       BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    -- When the next attempt is due; also a lease: a worker taking the row pushes it forward, so a
    -- worker that dies mid-delivery leaves the row to be retried (at-least-once).
    next_attempt_at BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_by_webhook ON outbox (webhook_id, created_at);
