"""Follow-ups after a contact: check-ins the person agreed to, and the optional survey."""
