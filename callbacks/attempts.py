"""Callback attempts as scheduled contacts (filled in by the callbacks work)."""
