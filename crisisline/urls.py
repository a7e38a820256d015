"""URLs for Twilio to call back: paths in TwiML (Twilio resolves them against the URL it
requested) and absolute URLs for REST-created calls and messages.

A line served under a path (``PUBLIC_BASE_URL=https://example.org/crisis``, the proxy passing
``/crisis/...`` on with or without ``X-Forwarded-Prefix``) gets that prefix on every URL it hands
Twilio; without ``PUBLIC_BASE_URL``, the request's own ``SCRIPT_NAME`` is the prefix.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app, has_request_context, request

from crisisline.settings import Settings


def url_prefix() -> str:
    """The path the line is served under, as Twilio sees it: "" or e.g. "/crisis"."""
    settings: Settings = current_app.extensions["crisisline.settings"]
    if settings.public_base_url:
        return urlsplit(settings.public_base_url).path.rstrip("/")
    return request.script_root if has_request_context() else ""


def path_for(endpoint: str, **values: Any) -> str:
    """The public path (with query) of ``endpoint``, with or without a request in progress."""
    adapter = current_app.url_map.bind("localhost")
    path: str = adapter.build(endpoint, values)
    return url_prefix() + path


def public_url(endpoint: str, **values: Any) -> str:
    """The absolute URL of ``endpoint`` at ``PUBLIC_BASE_URL``; without it, at the host the
    current request came to."""
    settings: Settings = current_app.extensions["crisisline.settings"]
    if settings.public_base_url:
        parts = urlsplit(settings.public_base_url)
        return f"{parts.scheme}://{parts.netloc}" + path_for(endpoint, **values)
    if has_request_context():
        return request.host_url.rstrip("/") + path_for(endpoint, **values)
    raise RuntimeError("PUBLIC_BASE_URL must be set to build callback URLs outside a request")
