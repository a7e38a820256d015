"""The counselor's own page: availability, what is on now, the SMS inbox, and wrap-ups."""
