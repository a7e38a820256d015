"""Calling people back instead of keeping them on hold: counselor first, then the person."""
