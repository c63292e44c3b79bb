"""The OAuth adapters' error translation, with recorded provider answers
(``httpx.MockTransport``): nothing from authlib or httpx escapes, Microsoft's
``error_codes`` survive (authlib alone would drop them and refuses their
line-broken descriptions), and request bodies are what the providers document."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import httpx
import pytest

from crmflow.domain.secret import Secret
from crmflow.providers.base import (
    ClientRejected,
    GrantRejected,
    OAuthClientCredentials,
    ProviderError,
    RateLimited,
    RevokeOutcome,
    TransientProviderError,
)
from crmflow.providers.google import GoogleEndpoints, GoogleOAuth
from crmflow.providers.microsoft import MicrosoftEndpoints, MicrosoftOAuth

CREDENTIALS = OAuthClientCredentials("client-1", Secret("client-secret-1"))
RT = Secret("refresh-token-1")


def _google(handler) -> GoogleOAuth:
    return GoogleOAuth(
        CREDENTIALS,
        GoogleEndpoints(
            "https://accounts.example", "https://oauth2.example", "https://api.example"
        ),
        transport=httpx.MockTransport(handler),
    )


def _microsoft(handler) -> MicrosoftOAuth:
    return MicrosoftOAuth(
        CREDENTIALS,
        MicrosoftEndpoints("https://login.example", "https://graph.example", "common"),
        transport=httpx.MockTransport(handler),
    )


def _answer(status: int, body: object, **headers: str):
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if isinstance(body, Exception):
            raise body
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers)

    handler.sent = sent  # type: ignore[attr-defined]
    return handler


async def test_google_refresh_sends_documented_body_and_keeps_no_refresh_token():
    handler = _answer(
        200,
        {"access_token": "at-2", "expires_in": 3599, "scope": "openid email"},
    )
    grant = await _google(handler).refresh(RT)
    assert grant.access_token == Secret("at-2")
    assert grant.refresh_token is None  # none sent: the caller keeps its own
    assert grant.expires_in_s == 3599
    assert grant.scopes == ("openid", "https://www.googleapis.com/auth/userinfo.email")
    body = parse_qs(handler.sent[0].content.decode())
    assert body == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["refresh-token-1"],
        "client_id": ["client-1"],
        "client_secret": ["client-secret-1"],
    }
    assert "client-secret-1" not in repr(grant)
    assert "at-2" not in repr(grant)


async def test_microsoft_dead_grant_keeps_its_aadsts_code():
    handler = _answer(
        400,
        {
            "error": "invalid_grant",
            "error_description": "AADSTS700082: The refresh token has expired due "
            "to inactivity.\r\nTrace ID: x\r\nCorrelation ID: y",
            "error_codes": [700082],
        },
    )
    with pytest.raises(GrantRejected) as caught:
        await _microsoft(handler).refresh(RT, scopes=["Mail.Read", "openid"])
    assert caught.value.codes == (700082,)
    assert "90 days without use (AADSTS700082)" in caught.value.message
    assert "Reconnect" in caught.value.message
    body = parse_qs(handler.sent[0].content.decode())
    assert body["scope"] == ["Mail.Read openid offline_access"]


@pytest.mark.parametrize(
    ("status", "body", "headers", "error"),
    [
        (400, {"error": "invalid_grant"}, {}, GrantRejected),
        (401, {"error": "invalid_client"}, {}, ClientRejected),
        (429, {"error": "rate_limit_exceeded"}, {"Retry-After": "7"}, RateLimited),
        (503, b"<html>Service Unavailable</html>", {}, TransientProviderError),
        (500, {"error": "internal_failure"}, {}, TransientProviderError),
        (200, b"<html>not json</html>", {}, ProviderError),
        (200, {"token_type": "Bearer"}, {}, ProviderError),
        (400, {"error": "invalid_scope"}, {}, ProviderError),
        (0, httpx.ConnectError("refused"), {}, TransientProviderError),
        (0, httpx.ReadTimeout("slow"), {}, TransientProviderError),
    ],
)
async def test_every_failure_becomes_a_provider_error(status, body, headers, error):
    with pytest.raises(error) as caught:
        await _google(_answer(status, body, **headers)).refresh(RT)
    assert type(caught.value).__module__ == "crmflow.providers.base"
    assert "refresh-token-1" not in caught.value.message
    assert "client-secret-1" not in caught.value.message
    if error is RateLimited:
        assert caught.value.retry_after_s == 7


async def test_google_revoke_of_a_dead_token_is_already_invalid():
    dead = _answer(400, {"error": "invalid_token"})
    assert await _google(dead).revoke(RT) is RevokeOutcome.ALREADY_INVALID
    ok = _answer(200, {})
    assert await _google(ok).revoke(RT) is RevokeOutcome.REVOKED
    assert parse_qs(ok.sent[0].content.decode())["token"] == ["refresh-token-1"]
    with pytest.raises(TransientProviderError):
        await _google(_answer(503, b"")).revoke(RT)


async def test_microsoft_has_no_revocation_and_sends_nothing():
    handler = _answer(500, {})
    assert await _microsoft(handler).revoke(RT) is RevokeOutcome.UNSUPPORTED
    assert handler.sent == []


def test_authorization_urls_carry_pkce_and_offline_access():
    google = _google(_answer(200, {})).authorization_url(
        redirect_uri="https://crm.example/oauth/callback/google",
        scopes=["openid"],
        state="s",
        code_verifier=Secret("v" * 43),
        login_hint="a@b.example",
        force_consent=True,
    )
    assert "code_challenge_method=S256" in google
    assert "access_type=offline" in google
    assert "prompt=consent" in google
    assert "v" * 43 not in google  # the verifier never leaves crmflow
    microsoft = _microsoft(_answer(200, {})).authorization_url(
        redirect_uri="https://crm.example/oauth/callback/microsoft",
        scopes=["Mail.Read"],
        state="s",
        code_verifier=Secret("v" * 43),
    )
    assert microsoft.startswith("https://login.example/common/oauth2/v2.0/authorize?")
    assert "scope=Mail.Read+offline_access" in microsoft
    assert "prompt" not in microsoft
