"""Webhook requests exactly as Twilio sends them: full parameter sets, signed with HMAC-SHA1.

Twilio signs the full URL it requested plus every POST field sorted by name
(``twilio.request_validator.RequestValidator.compute_signature``), and sends
``X-Twilio-Signature``, ``I-Twilio-Idempotency-Token`` and ``User-Agent: TwilioProxy/1.1``.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
VOICE_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=UTF-8"


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two-letter prefix plus 32 hex digits (``CA…``, ``SM…``, ``CF…``)."""
    return prefix + uuid.uuid4().hex


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` value Twilio would send for a POST of ``params`` to ``url``."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


def signed_headers(auth_token: str, url: str, params: Mapping[str, str], *, voice: bool = True) -> dict[str, str]:
    """All headers of a Twilio webhook POST, signature included."""
    return {
        "X-Twilio-Signature": sign(auth_token, url, params),
        "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        "User-Agent": "TwilioProxy/1.1",
        "Content-Type": VOICE_CONTENT_TYPE if voice else FORM_CONTENT_TYPE,
        "X-Home-Region": "us1",
    }


@dataclass
class CallIdentity:
    """The stable parameters of one call leg, reused on every webhook of that call."""

    account_sid: str
    from_number: str
    to_number: str
    call_sid: str = field(default_factory=lambda: new_sid("CA"))
    direction: str = "inbound"
    parent_call_sid: str | None = None
    from_country: str = "US"
    to_country: str = "US"

    def voice_params(self, call_status: str = "ringing", **extra: str) -> dict[str, str]:
        """Twilio's standard voice request parameters (§1.1), plus ``extra`` (e.g. ``Digits``).

        Includes the legacy ``Caller``/``Called`` duplicates and geographic fields, as real
        Twilio requests do, so that signature validation covers every field.
        """
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": self.call_sid,
            "CallStatus": call_status,
            "Direction": self.direction,
            "From": self.from_number,
            "To": self.to_number,
            "Caller": self.from_number,
            "Called": self.to_number,
            "CallToken": "",
            "FromCity": "",
            "FromState": "",
            "FromZip": "",
            "FromCountry": self.from_country,
            "ToCity": "",
            "ToState": "",
            "ToZip": "",
            "ToCountry": self.to_country,
            "CallerCity": "",
            "CallerState": "",
            "CallerZip": "",
            "CallerCountry": self.from_country,
            "CalledCity": "",
            "CalledState": "",
            "CalledZip": "",
            "CalledCountry": self.to_country,
        }
        if self.parent_call_sid:
            params["ParentCallSid"] = self.parent_call_sid
        params.update(extra)
        return params


def gather_digits_params(identity: CallIdentity, digits: str) -> dict[str, str]:
    """Parameters of a ``<Gather>`` action request after keypad input (§1.2)."""
    return identity.voice_params("in-progress", Digits=digits, FinishedOnKey="", msg="Gather End")


def gather_speech_params(identity: CallIdentity, speech: str, confidence: float = 0.92) -> dict[str, str]:
    """Parameters of a ``<Gather>`` action request after speech input (§1.2)."""
    return identity.voice_params("in-progress", SpeechResult=speech, Confidence=f"{confidence:.8f}", msg="Gather End")


def sms_params(
    account_sid: str,
    from_number: str,
    to_number: str,
    body: str,
    message_sid: str | None = None,
    num_media: int = 0,
) -> dict[str, str]:
    """Twilio's inbound-message webhook parameters (§2.1)."""
    sid = message_sid or new_sid("SM" if num_media == 0 else "MM")
    params = {
        "ToCountry": "US",
        "ToState": "",
        "SmsMessageSid": sid,
        "NumMedia": str(num_media),
        "ToCity": "",
        "FromZip": "",
        "SmsSid": sid,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": "US",
        "To": to_number,
        "ToZip": "",
        "NumSegments": "1",
        "ReferralNumMedia": "0",
        "MessageSid": sid,
        "AccountSid": account_sid,
        "From": from_number,
        "ApiVersion": API_VERSION,
    }
    for index in range(num_media):
        params[f"MediaUrl{index}"] = (
            f"https://api.twilio.com/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Media/ME{index}"
        )
        params[f"MediaContentType{index}"] = "image/jpeg"
    return params
