-- Console sessions. Only the SHA-256 of the session token is stored (like API keys); the CSRF
-- token is per session and is compared, not secret from the session's own pages.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    workspace  TEXT NOT NULL,
    username   TEXT NOT NULL,
    role       TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
