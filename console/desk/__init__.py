"""The counselor's own page: their availability switch and what they are offered or on now."""
