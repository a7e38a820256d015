"""Check-ins and surveys as scheduled contacts (filled in by the follow-ups work)."""
