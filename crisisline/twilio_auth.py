"""``X-Twilio-Signature`` validation for every Twilio-facing route, correct behind proxies.

Twilio signs the exact URL it requested. Behind a TLS-terminating proxy our WSGI request
sees ``http://internal:8000/...``; ``ProxyFix`` (``TRUSTED_PROXY_COUNT``) restores the
public scheme and host, and ``PUBLIC_BASE_URL`` gives a second, proxy-independent
candidate. The check never touches the database, so a forged request is refused with 403
even while the database is down.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import abort, current_app, request
from twilio.request_validator import RequestValidator

from crisisline.settings import Settings

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def candidate_urls(public_base_url: str | None) -> list[str]:
    """The URLs Twilio may have signed for the current request, the likeliest first: each
    one tried costs two HMACs (with and without the port), on every webhook."""
    query = request.query_string.decode("latin-1")
    suffix = f"?{query}" if query else ""
    urls: list[str] = []
    if public_base_url:
        # The proxy may pass the line's path prefix on (``SCRIPT_NAME`` via X-Forwarded-Prefix)
        # or strip it silently; either way Twilio signed PUBLIC_BASE_URL + the route's path.
        parts = urlsplit(public_base_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        urls.append(public_base_url + request.path + suffix)
        urls.append(origin + request.script_root + request.path + suffix)
    urls.append(request.base_url + suffix)  # as the WSGI request (or ProxyFix) sees it
    return list(dict.fromkeys(urls))


def signing_tokens(settings: Settings) -> list[str]:
    """The auth tokens a webhook may be signed with: the line's, then, while it is being rotated
    out, the previous one (Twilio signs with the account's primary token, which changes only
    when the new token is promoted: accepting both leaves no moment where every call and text
    is refused, the Fallback URL included)."""
    return [token for token in (settings.twilio_auth_token, settings.twilio_previous_auth_token) if token]


def request_is_from_twilio() -> bool:
    settings: Settings = current_app.extensions["crisisline.settings"]
    signature = request.headers.get("X-Twilio-Signature", "")
    tokens = signing_tokens(settings)
    if not signature or not tokens:
        return False
    # Every received field is signed, including ones Twilio adds without notice.
    params = request.form if request.method == "POST" else {}
    urls = candidate_urls(settings.public_base_url)
    return any(RequestValidator(token).validate(url, params, signature) for token in tokens for url in urls)


def twilio_signed(view: Callable[P, R]) -> Callable[P, R]:
    """Refuse (403) any request not signed by Twilio with our auth token; runs before the view."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not request_is_from_twilio():
            log.warning("refused unsigned or forged request to %s", request.path)
            abort(403)
        return view(*args, **kwargs)

    return wrapper
