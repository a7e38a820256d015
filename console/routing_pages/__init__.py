"""The routing pages of the console (issue 11): the YAML editor with preview and publish,
the version history with roll back, the simulator and the coverage week, and forms for people
and shifts that produce a draft for the same preview and publish.

Thin over :mod:`routing.publishing`, :mod:`routing.simulator` and :mod:`routing.coverage`, the
functions ``flask routing`` calls: the console and the CLI share one validator and one engine.
"""
