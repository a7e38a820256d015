"""The crisis line's shared core: settings, database, privacy, Twilio auth and the fail-safe."""

from crisisline.app import create_app

__all__ = ["create_app"]
