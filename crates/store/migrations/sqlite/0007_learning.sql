-- The learning loop: thresholds the server tunes, and standing rules proposed by reviewers.

-- The current value of each `threshold = "auto"` rule, by rule name. A rule renamed in a new
-- policy version starts again from its `max` (the cautious end).
CREATE TABLE auto_thresholds (
    workspace  TEXT NOT NULL REFERENCES workspaces(name),
    rule       TEXT NOT NULL,
    value      REAL NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workspace, rule)
);

-- "Approve and don't ask again": a standing rule a reviewer proposed, with its backtest, until
-- an admin approves it (a new policy version) or rejects it.
CREATE TABLE policy_proposals (
    id             TEXT PRIMARY KEY,
    workspace      TEXT NOT NULL REFERENCES workspaces(name),
    status         TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    rule_name      TEXT NOT NULL,
    rule_toml      TEXT NOT NULL,
    agent          TEXT NOT NULL,
    action         TEXT NOT NULL,
    -- The rule the new one goes just before (the one that sent the approved item to review);
    -- NULL appends it.
    before_rule    TEXT,
    base_version   INTEGER NOT NULL,
    review_id      TEXT NOT NULL,
    action_id      TEXT NOT NULL,
    proposed_by    TEXT NOT NULL,
    backtest       TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    decided_by     TEXT,
    decided_at     INTEGER,
    policy_version INTEGER
);
CREATE INDEX policy_proposals_open ON policy_proposals (workspace, status, created_at);

-- Evidence scans: QA and flag reviews of a message, AI messages of a workspace by time.
CREATE INDEX reviews_by_message ON reviews (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX messages_by_workspace ON messages (workspace, created_at);
