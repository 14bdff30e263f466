-- The conversation list shows each conversation's newest AI reply: one probe of this index
-- instead of a scan of the transcript.
CREATE INDEX messages_by_conversation_role ON messages (conversation_id, role, created_at);
