"""Step 1 of the flow: turn a queue message into the study it announces (or a reason to drop it)."""
