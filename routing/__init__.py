"""The line's routing: one config document, one validator, one engine, shared by every entry point.

- ``document``: the typed, frozen shape of a valid routing config.
- ``validation``: YAML text → document, or every problem with its place in the file.
- ``schedule``: who is on call at a given moment (weekly shifts plus one-off overrides).
- ``engine``: who to ring for a language and a need, and what to fall back to.
- ``store``: published, versioned documents in the database.
"""
