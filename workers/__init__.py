"""Background work run by RQ workers (the Procfile's ``worker`` and ``clock``).

Queues are named by purpose (``crisisline.app.QUEUES``); jobs are small functions that take
ids, never personal data, and say in their docstring why running them twice is safe.
"""
