"""Media attached to events, the agent's side: the spool and the uploader (docs/agent-media.md)."""
