"""The line's routing: one config document, one validator, one engine, shared by every entry point.

- ``document``: the typed, frozen shape of a valid routing config.
- ``validation``: YAML text → document, or every problem with its path, line and column.
- ``voices``: which Twilio voices speak which language.
- ``schedule``: who is on call at a given moment (weekly shifts plus one-off overrides).
- ``engine``: who to ring for a language and a need, and what to fall back to.
- ``timing``: seconds of menus before the first ring.
- ``coverage``: the week per language and need, with every gap (through the engine).
- ``review``: warnings that need more than the text (clock, environment, whole rota).
- ``simulator``: who would be rung for a caller at a moment, and what they hear.
- ``store``: published, versioned documents in the database.
- ``publishing``: preview (diff, problems, warnings), publish with base/note/author, history,
  rollback: what ``flask routing`` and the web console both call.
"""
