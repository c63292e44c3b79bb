"""Identity platform fidelity: Microsoft's own msal against the sandbox's authorize/token endpoints.

msal is used exactly as an app would, with only the authority pointed at the
sandbox (``instance_discovery=False``, ``validate_authority=False`` as msal
allows) and the sandbox's test CA trusted via ``verify``. The consent form is
driven with httpx like a browser would.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import msal  # type: ignore[import-untyped]  # msal ships no type information
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.sandbox.microsoft.conftest import Ms

REDIRECT = "https://app.example/auth/microsoft/callback"
EMAIL = "ada@contoso.example"
SCOPES = ["User.Read", "Calendars.ReadWrite", "Mail.Send"]


@pytest.fixture(autouse=True)
def _trust_the_sandbox_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's
    # ``verify`` (psf/requests#3829); unset them so msal's verify= applies.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


TEST_SECRET = "s3cret-value"


def _register(ms: Ms, secret: str = TEST_SECRET) -> dict[str, Any]:
    ms.add_user(EMAIL, "Ada Lovelace")
    response = ms.control(
        "POST",
        "/clients",
        {"redirect_uris": [REDIRECT], "client_secret": secret, "name": "crmflow"},
    )
    assert response.status_code == 201
    return dict(response.json())


_OPEN_APPS: list[msal.ConfidentialClientApplication] = []


@pytest.fixture(autouse=True)
def _close_msal_sessions() -> Iterator[None]:
    yield
    while _OPEN_APPS:
        _OPEN_APPS.pop().http_client.close()


def _msal(
    ms: Ms, client: dict[str, Any], secret: str | None = None, tenant: str = "common"
) -> msal.ConfidentialClientApplication:
    app = msal.ConfidentialClientApplication(
        client["client_id"],
        client_credential=secret or client["client_secret"],
        authority=f"{ms.base}/{tenant}",
        instance_discovery=False,
        validate_authority=False,
        verify=ms.server.cafile,
    )
    _OPEN_APPS.append(app)
    return app


def _consent(
    ms: Ms,
    auth_uri: str,
    *,
    email: str = EMAIL,
    drop: tuple[str, ...] = (),
    action: str = "accept",
) -> httpx.Response:
    """Open the consent page and submit it like a browser."""
    with httpx.Client(verify=ms.server.ssl) as browser:
        page = browser.get(auth_uri)
        assert page.status_code == 200, page.text
        form_action = re.search(r'<form method="POST" action="([^"]+)"', page.text)
        pending = re.search(r'name="pending" value="([^"]+)"', page.text)
        assert form_action
        assert pending
        scopes = [
            s
            for s in re.findall(r'name="scope" value="([^"]+)"', page.text)
            if s not in drop
        ]
        return browser.post(
            form_action.group(1).replace("&amp;", "&"),
            data={
                "pending": pending.group(1),
                "login": email,
                "scope": scopes,
                "action": action,
            },
        )


def _auth_response(redirect: httpx.Response) -> dict[str, str]:
    if redirect.status_code == 200:
        # response_mode=form_post: an auto-submitting form to the redirect URI
        action = re.search(r'<form method="POST" action="([^"]+)"', redirect.text)
        assert action
        assert html.unescape(action.group(1)) == REDIRECT
        return {
            html.unescape(k): html.unescape(v)
            for k, v in re.findall(r'name="([^"]+)" value="([^"]*)"', redirect.text)
        }
    assert redirect.status_code == 302, redirect.text
    location = redirect.headers["location"]
    assert location.startswith(REDIRECT)
    return dict(parse_qsl(urlsplit(location).query))


def _code_flow(
    ms: Ms, client: dict[str, Any]
) -> tuple[msal.ConfidentialClientApplication, dict[str, Any], dict[str, Any]]:
    app = _msal(ms, client)
    flow = app.initiate_auth_code_flow(
        SCOPES, redirect_uri=REDIRECT, login_hint=EMAIL, response_mode="form_post"
    )
    result = app.acquire_token_by_auth_code_flow(
        flow, _auth_response(_consent(ms, flow["auth_uri"]))
    )
    return app, flow, result


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_msal_auth_code_with_pkce_returns_tokens_and_verifiable_id_token(
    ms: Ms,
) -> None:
    client = _register(ms)
    _app, flow, result = _code_flow(ms, client)
    assert "error" not in result, result
    assert result["token_type"] == "Bearer"
    # random 60-90 minute lifetime, never a fixed 3600
    assert 3600 <= result["expires_in"] <= 5400
    assert result["ext_expires_in"] == result["expires_in"]
    assert result["refresh_token"]
    assert set(result["scope"].split()) >= {
        "User.Read",
        "Calendars.ReadWrite",
        "Mail.Send",
        "openid",
        "profile",
    }
    claims = result["id_token_claims"]
    assert claims["aud"] == client["client_id"]
    assert claims["preferred_username"] == EMAIL
    assert claims["ver"] == "2.0"
    assert claims["iss"].endswith(f"/{claims['tid']}/v2.0")
    auth_query = parse_qs(urlsplit(flow["auth_uri"]).query)
    assert auth_query["code_challenge_method"] == ["S256"]
    assert claims["nonce"] == auth_query["nonce"][0]
    # RS256 signature verifies with the published JWKS key
    header_b64, payload_b64, sig_b64 = result["id_token"].split(".")
    header = json.loads(_b64(header_b64))
    keys = httpx.get(
        f"{ms.base}/common/discovery/v2.0/keys", verify=ms.server.ssl
    ).json()["keys"]
    key = next(k for k in keys if k["kid"] == header["kid"])
    public = rsa.RSAPublicNumbers(
        int.from_bytes(_b64(key["e"]), "big"), int.from_bytes(_b64(key["n"]), "big")
    ).public_key()
    public.verify(
        _b64(sig_b64),
        f"{header_b64}.{payload_b64}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


async def test_graph_me_with_the_msal_token(ms: Ms) -> None:
    client = _register(ms)
    _app, _flow, result = _code_flow(ms, client)
    async with ms.client(result["access_token"]) as graph:
        me = await graph.get("/me")
    assert me.status_code == 200
    body = me.json()
    assert body["mail"] == EMAIL
    assert body["userPrincipalName"] == EMAIL
    assert body["displayName"] == "Ada Lovelace"
    assert body["id"]
    assert me.headers["content-type"].startswith(
        "application/json; odata.metadata=minimal"
    )
    assert me.headers["request-id"]


def test_msal_refresh_rotates_and_the_old_refresh_token_stays_valid(ms: Ms) -> None:
    client = _register(ms)
    app, _flow, first = _code_flow(ms, client)
    second = app.acquire_token_by_refresh_token(first["refresh_token"], SCOPES)
    assert "error" not in second, second
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    # "doesn't revoke old refresh tokens when used"
    third = app.acquire_token_by_refresh_token(first["refresh_token"], SCOPES)
    assert "error" not in third, third


@pytest.mark.parametrize("code", [70008, 700082, 50173, 70000])
def test_msal_refresh_with_a_dead_grant_gets_the_aadsts_envelope(
    ms: Ms, code: int
) -> None:
    client = _register(ms)
    app, _flow, first = _code_flow(ms, client)
    assert (
        ms.control(
            "POST", "/tokens/expire", {"email": EMAIL, "kind": "refresh", "code": code}
        ).json()["expired"]
        >= 1
    )
    result = app.acquire_token_by_refresh_token(first["refresh_token"], SCOPES)
    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [code]
    assert result["error_description"].startswith(f"AADSTS{code}: ")
    assert "Trace ID:" in result["error_description"]
    for key in ("timestamp", "trace_id", "correlation_id", "error_uri"):
        assert result[key]


def test_refresh_after_ninety_idle_days_is_700082(ms: Ms) -> None:
    client = _register(ms)
    app, _flow, first = _code_flow(ms, client)
    ms.control("POST", "/clock", {"advance_s": 91 * 24 * 3600})
    result = app.acquire_token_by_refresh_token(first["refresh_token"], SCOPES)
    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [700082]


def test_msal_refresh_with_unconsented_scope_needs_consent(ms: Ms) -> None:
    client = _register(ms)
    app, _flow, first = _code_flow(ms, client)
    result = app.acquire_token_by_refresh_token(
        first["refresh_token"], ["Mail.ReadWrite"]
    )
    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [65001]
    assert result["suberror"] == "consent_required"


def test_msal_wrong_client_secret_is_invalid_client(ms: Ms) -> None:
    client = _register(ms)
    app = _msal(ms, client)
    flow = app.initiate_auth_code_flow(
        SCOPES, redirect_uri=REDIRECT, login_hint=EMAIL, response_mode="form_post"
    )
    response = _auth_response(_consent(ms, flow["auth_uri"]))
    wrong = _msal(ms, client, secret="not-the-secret")
    result = wrong.acquire_token_by_auth_code_flow(flow, response)
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]


def test_msal_pkce_verifier_mismatch_is_50148(ms: Ms) -> None:
    client = _register(ms)
    app = _msal(ms, client)
    flow = app.initiate_auth_code_flow(
        SCOPES, redirect_uri=REDIRECT, login_hint=EMAIL, response_mode="form_post"
    )
    response = _auth_response(_consent(ms, flow["auth_uri"]))
    flow["code_verifier"] = "x" * 50
    result = app.acquire_token_by_auth_code_flow(flow, response)
    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [50148]


def test_code_is_single_use(ms: Ms) -> None:
    client = _register(ms)
    app = _msal(ms, client)
    flow = app.initiate_auth_code_flow(
        SCOPES, redirect_uri=REDIRECT, login_hint=EMAIL, response_mode="form_post"
    )
    response = _auth_response(_consent(ms, flow["auth_uri"]))
    assert "access_token" in app.acquire_token_by_auth_code_flow(dict(flow), response)
    again = app.acquire_token_by_auth_code_flow(dict(flow), response)
    assert again["error_codes"] == [54005]


def test_consent_cancel_redirects_access_denied(ms: Ms) -> None:
    client = _register(ms)
    app = _msal(ms, client)
    flow = app.initiate_auth_code_flow(
        SCOPES, redirect_uri=REDIRECT, login_hint=EMAIL, response_mode="form_post"
    )
    response = _auth_response(_consent(ms, flow["auth_uri"], action="cancel"))
    assert response["error"] == "access_denied"
    assert response["error_description"].startswith("AADSTS65004")
    assert response["state"] == flow["state"]


def _raw_authorize(
    ms: Ms,
    client: dict[str, Any],
    scope: str,
    *,
    tenant: str = "common",
    email: str = EMAIL,
    drop: tuple[str, ...] = (),
) -> dict[str, str]:
    verifier = "v" * 64
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        .rstrip(b"=")
        .decode()
    )
    query = httpx.QueryParams(
        {
            "client_id": client["client_id"],
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "scope": scope,
            "state": "st",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return _auth_response(
        _consent(
            ms,
            f"{ms.base}/{tenant}/oauth2/v2.0/authorize?{query}",
            email=email,
            drop=drop,
        )
    ) | {"verifier": verifier}


def _redeem(
    ms: Ms, client: dict[str, Any], auth: dict[str, str], tenant: str = "common"
) -> httpx.Response:
    return httpx.post(
        f"{ms.base}/{tenant}/oauth2/v2.0/token",
        data={
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "grant_type": "authorization_code",
            "code": auth["code"],
            "redirect_uri": REDIRECT,
            "code_verifier": auth["verifier"],
        },
        verify=ms.server.ssl,
    )


def test_no_offline_access_no_refresh_token_and_no_openid_no_id_token(ms: Ms) -> None:
    client = _register(ms)
    auth = _raw_authorize(ms, client, "User.Read Calendars.Read")
    body = _redeem(ms, client, auth).json()
    assert body["access_token"]
    assert "refresh_token" not in body
    assert "id_token" not in body


def test_partial_consent_grants_fewer_scopes(ms: Ms) -> None:
    client = _register(ms)
    auth = _raw_authorize(
        ms,
        client,
        "openid offline_access User.Read https://graph.microsoft.com/Mail.Send",
        drop=("Mail.Send",),
    )
    body = _redeem(ms, client, auth).json()
    assert "Mail.Send" not in body["scope"].split()
    assert "User.Read" in body["scope"].split()


def test_code_redeemed_at_another_tenant_is_700005(ms: Ms) -> None:
    client = _register(ms)
    auth = _raw_authorize(
        ms, client, "User.Read offline_access", tenant="organizations"
    )
    body = _redeem(ms, client, auth, tenant="consumers").json()
    assert body["error_codes"] == [700005]


def test_consumers_tenant_refuses_work_accounts(ms: Ms) -> None:
    client = _register(ms)
    auth = _raw_authorize(ms, client, "User.Read", tenant="consumers")
    assert auth["error_description"].startswith("AADSTS50020")


def test_redirect_uri_mismatch_is_shown_not_redirected(ms: Ms) -> None:
    client = _register(ms)
    query = httpx.QueryParams(
        {
            "client_id": client["client_id"],
            "response_type": "code",
            "redirect_uri": "https://evil.example/cb",
            "scope": "User.Read",
        }
    )
    page = httpx.get(
        f"{ms.base}/common/oauth2/v2.0/authorize?{query}", verify=ms.server.ssl
    )
    assert page.status_code == 400
    assert "AADSTS50011" in page.text


def test_scopes_of_two_resources_are_28000(ms: Ms) -> None:
    client = _register(ms)
    query = httpx.QueryParams(
        {
            "client_id": client["client_id"],
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "scope": "User.Read https://outlook.office.com/Mail.Read",
            "state": "s",
        }
    )
    redirect = httpx.get(
        f"{ms.base}/common/oauth2/v2.0/authorize?{query}", verify=ms.server.ssl
    )
    params = _auth_response(redirect)
    assert params["error"] == "invalid_scope"


def test_injected_token_error_fault(ms: Ms) -> None:
    client = _register(ms)
    app, _flow, first = _code_flow(ms, client)
    fault = ms.control(
        "POST",
        "/faults",
        {"kind": "identity_token_error", "aadsts_code": 50076, "count": 1},
    )
    assert fault.status_code == 201
    result = app.acquire_token_by_refresh_token(first["refresh_token"], SCOPES)
    assert result["error"] == "interaction_required"
    assert result["error_codes"] == [50076]
    # count=1: the fault retired (msal itself would replay its cached error, so ask directly)
    again = httpx.post(
        f"{ms.base}/common/oauth2/v2.0/token",
        data={
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
        },
        verify=ms.server.ssl,
    )
    assert again.status_code == 200, again.text


async def test_graph_rejects_missing_expired_and_revoked_tokens(ms: Ms) -> None:
    ms.add_user(EMAIL)
    async with ms.client() as anonymous:
        missing = await anonymous.get("/me")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert missing.json()["error"]["message"] == "Access token is empty."
    assert missing.headers["www-authenticate"].startswith("Bearer")
    token = ms.token(EMAIL)
    ms.control("POST", "/clock", {"advance_s": 91 * 60})
    async with ms.client(token) as graph:
        expired = await graph.get("/me")
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "InvalidAuthenticationToken"
    token = ms.token(EMAIL)
    ms.control("POST", "/grants/revoke", {"email": EMAIL})
    async with ms.client(token) as graph:
        revoked = await graph.get("/me")
    assert revoked.status_code == 401
    inner = revoked.json()["error"]["innerError"]
    assert set(inner) == {"date", "request-id", "client-request-id"}


async def test_me_needs_user_read(ms: Ms) -> None:
    async with ms.user_client(EMAIL, ["Calendars.Read"]) as graph:
        response = await graph.get("/me", headers={"client-request-id": "my-id"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Authorization_RequestDenied"
    assert response.headers["client-request-id"] == "my-id"


def test_openid_configuration_unknown_tenant(ms: Ms) -> None:
    response = httpx.get(
        f"{ms.base}/nonexistent.example/v2.0/.well-known/openid-configuration",
        verify=ms.server.ssl,
    )
    assert response.status_code == 400
    assert "AADSTS90002" in response.json()["error_description"]


def test_non_ascii_code_verifier_and_client_secret_are_aadsts_errors(ms: Ms) -> None:
    """Non-ASCII client input fails the check (50148 / 7000215) instead of a 500."""
    client = _register(ms)
    auth = _raw_authorize(ms, client, "User.Read")
    mismatch = _redeem(ms, client, auth | {"verifier": "ü" * 64})
    assert mismatch.status_code == 400
    assert mismatch.json()["error"] == "invalid_grant"
    assert mismatch.json()["error_codes"] == [50148]
    auth = _raw_authorize(ms, client, "User.Read")
    bad_secret = _redeem(ms, client | {"client_secret": "sécret"}, auth)
    assert bad_secret.status_code == 401
    assert bad_secret.json()["error_codes"] == [7000215]
