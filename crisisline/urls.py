"""Absolute URLs for Twilio to call back (REST-created calls need them, unlike TwiML)."""

from __future__ import annotations

from typing import Any

from flask import current_app, has_request_context, request

from crisisline.settings import Settings


def path_for(endpoint: str, **values: Any) -> str:
    """The path (with query) of ``endpoint``, with or without a request in progress."""
    adapter = current_app.url_map.bind("localhost")
    path: str = adapter.build(endpoint, values)
    return path


def public_url(endpoint: str, **values: Any) -> str:
    """``PUBLIC_BASE_URL`` + path; without it, the host the current request came to."""
    settings: Settings = current_app.extensions["crisisline.settings"]
    if settings.public_base_url:
        return settings.public_base_url + path_for(endpoint, **values)
    if has_request_context():
        return request.host_url.rstrip("/") + path_for(endpoint, **values)
    raise RuntimeError("PUBLIC_BASE_URL must be set to build callback URLs outside a request")
