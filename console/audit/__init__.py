"""The audit log: who did what to what, and when."""
