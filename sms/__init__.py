"""Text messages to the line's number.

For now: staff commands from registered responder phones (``ON``, ``OFF``, ``STATUS``), and a
safe pointer to help for anyone else. The texter conversation flow arrives with the SMS issue.
"""
