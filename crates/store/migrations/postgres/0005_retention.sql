-- Retention (EU AI Act art. 26(6): logs kept at least six months): how many days each workspace
-- keeps its decided and closed records before `loopgate prune` removes them. The domain
-- (loopgate_domain::retention) checks the bounds; the CHECK is the last line of defence.
ALTER TABLE workspaces ADD COLUMN retention_days BIGINT NOT NULL DEFAULT 400
    CHECK (retention_days >= 183);

-- Prune finds old rows through these instead of scanning whole tables.
CREATE INDEX outbox_by_workspace ON outbox (workspace, created_at);
CREATE INDEX feedback_by_conversation ON feedback (conversation_id);
CREATE INDEX idempotency_keys_by_action ON idempotency_keys (action_id);
