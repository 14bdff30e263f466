-- The learning loop: knowledge changes agents propose and humans decide, and the keyset indexes
-- the training export pages through.

-- A proposed change to an agent's knowledge base, decided by its `kb_change` review. `title` and
-- `text` are what agents get (the proposal, or the reviewer's edit once approved); the proposal
-- itself is kept beside them.
CREATE TABLE knowledge_changes (
    id              TEXT PRIMARY KEY,
    workspace       TEXT NOT NULL REFERENCES workspaces(name),
    agent           TEXT NOT NULL,
    title           TEXT NOT NULL,
    text            TEXT NOT NULL,
    proposed_title  TEXT NOT NULL,
    proposed_text   TEXT NOT NULL,
    conversation_id TEXT,
    review_id       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    -- Approval order within the workspace, given in the writer's transaction (so gap-free and
    -- race-free): the `after` cursor agents poll with. NULL until approved.
    seq             INTEGER,
    decided_by      TEXT,
    created_at      INTEGER NOT NULL,
    decided_at      INTEGER
);
CREATE UNIQUE INDEX knowledge_approved ON knowledge_changes (workspace, seq) WHERE seq IS NOT NULL;
CREATE INDEX knowledge_by_review ON knowledge_changes (review_id);

-- The training export reads decisions and conversations in id order (UUIDv7: creation order),
-- one page at a time from where the last page ended.
CREATE INDEX decisions_by_workspace ON decisions (workspace, id);
CREATE INDEX conversations_by_workspace ON conversations (workspace, id);
