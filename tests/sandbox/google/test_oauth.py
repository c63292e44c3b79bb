"""OAuth 2.0 for web-server apps and token checks on API calls (checklist 29-32, issue §1)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from urllib.parse import parse_qs, urlsplit

import google_auth_httplib2
import httplib2
import pytest
from google.auth.exceptions import RefreshError
from google.oauth2.credentials import Credentials

from tests.sandbox.conftest import CALENDAR, GMAIL_MODIFY, GoogleSandbox

ADA = "ada@example.com"
REDIRECT = "http://127.0.0.1:9999/oauth/callback"
VERIFIER = "a" * 43 + "-verifier._~"


def _challenge(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        .rstrip(b"=")
        .decode()
    )


@pytest.fixture
def client(google: GoogleSandbox) -> dict:
    response = google.control(
        "POST", "clients", json={"redirect_uris": [REDIRECT], "name": "crmflow test"}
    )
    assert response.status_code == 201
    return response.json()


def _authorize(google: GoogleSandbox, client: dict, **params) -> str:
    """GET the authorization endpoint; return the consent page HTML."""
    query = {
        "client_id": client["client_id"],
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": f"openid email {CALENDAR} {GMAIL_MODIFY}",
        "state": "xyz-123",
        "access_type": "offline",
        "code_challenge": _challenge(VERIFIER),
        "code_challenge_method": "S256",
    }
    query.update(params)
    response = google.http.get(google.base + "o/oauth2/v2/auth", params=query)
    assert response.status_code == 200, response.text
    return response.text


def _consent(
    google: GoogleSandbox, page: str, *, email: str = ADA, scopes=None, action="allow"
) -> dict:
    consent_id = re.search(r'name="consent_id" value="([^"]+)"', page).group(1)
    offered = re.findall(r'name="scope" value="([^"]+)"', page)
    form = {
        "consent_id": consent_id,
        "new_email": email,
        "action": action,
        "scope": scopes if scopes is not None else offered,
    }
    response = google.http.post(google.base + "signin/oauth/consent", data=form)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _exchange(
    google: GoogleSandbox, client: dict, code: str, **extra
) -> tuple[int, dict]:
    form = {
        "code": code,
        "client_id": client["client_id"],
        "client_secret": client["client_secret"],
        "redirect_uri": REDIRECT,
        "grant_type": "authorization_code",
        "code_verifier": VERIFIER,
    }
    form.update(extra)
    form = {k: v for k, v in form.items() if v is not None}
    response = google.http.post(google.base + "token", data=form)
    return response.status_code, response.json()


def _refresh(
    google: GoogleSandbox, client: dict, refresh_token: str
) -> tuple[int, dict]:
    response = google.http.post(
        google.base + "token",
        data={
            "refresh_token": refresh_token,
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "grant_type": "refresh_token",
        },
    )
    return response.status_code, response.json()


def test_consent_page_lists_users_and_scopes(google: GoogleSandbox, client: dict):
    google.control("POST", "users", json={"email": ADA})
    page = _authorize(google, client, login_hint=ADA)
    assert f'value="{ADA}" checked' in page
    assert f'type="checkbox" name="scope" value="{CALENDAR}" checked' in page
    assert f'type="checkbox" name="scope" value="{GMAIL_MODIFY}" checked' in page
    # Identity scopes cannot be unticked, as on Google's granular consent page.
    assert 'type="hidden" name="scope" value="openid"' in page


def test_full_flow_with_pkce_partial_grant_and_scope_checks(
    google: GoogleSandbox, client: dict
):
    page = _authorize(google, client)
    redirect = _consent(google, page, scopes=[CALENDAR])  # Gmail unticked
    assert redirect["state"] == "xyz-123"
    granted = "https://www.googleapis.com/auth/calendar https://www.googleapis.com/auth/userinfo.email openid"
    assert redirect["scope"] == granted
    status, token = _exchange(google, client, redirect["code"])
    assert status == 200, token
    assert set(token) == {
        "access_token",
        "expires_in",
        "refresh_token",
        "scope",
        "token_type",
        "id_token",
    }
    assert token["expires_in"] == 3599
    assert token["token_type"] == "Bearer"
    assert token["scope"] == granted
    claims = json.loads(
        base64.urlsafe_b64decode(token["id_token"].split(".")[1] + "==")
    )
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["aud"] == client["client_id"]
    assert claims["email"] == ADA

    api = google.api(token["access_token"])
    assert api.get("calendar/v3/calendars/primary/events").status_code == 200
    denied = api.get("gmail/v1/users/me/profile")
    assert denied.status_code == 403
    assert denied.json()["error"]["errors"][0]["reason"] == "insufficientPermissions"

    # The code is single-use.
    status, reused = _exchange(google, client, redirect["code"])
    assert (status, reused) == (
        400,
        {"error": "invalid_grant", "error_description": "Bad Request"},
    )


def test_refresh_token_only_on_first_consent_unless_prompt_consent(
    google: GoogleSandbox, client: dict
):
    first = _exchange(
        google, client, _consent(google, _authorize(google, client))["code"]
    )[1]
    assert "refresh_token" in first
    second = _exchange(
        google, client, _consent(google, _authorize(google, client))["code"]
    )[1]
    assert "refresh_token" not in second
    forced = _exchange(
        google,
        client,
        _consent(google, _authorize(google, client, prompt="consent"))["code"],
    )[1]
    assert "refresh_token" in forced
    online = _exchange(
        google,
        client,
        _consent(
            google, _authorize(google, client, access_type="online", prompt="consent")
        )["code"],
    )[1]
    assert "refresh_token" not in online


def test_include_granted_scopes_adds_earlier_grants(
    google: GoogleSandbox, client: dict
):
    _exchange(
        google,
        client,
        _consent(google, _authorize(google, client, scope=CALENDAR))["code"],
    )
    without = _exchange(
        google,
        client,
        _consent(google, _authorize(google, client, scope=GMAIL_MODIFY))["code"],
    )[1]
    assert without["scope"] == GMAIL_MODIFY
    incremental = _exchange(
        google,
        client,
        _consent(
            google,
            _authorize(
                google, client, scope=GMAIL_MODIFY, include_granted_scopes="true"
            ),
        )["code"],
    )[1]
    assert incremental["scope"] == f"{CALENDAR} {GMAIL_MODIFY}"


def test_refresh_keeps_refresh_token_and_issues_3599s_tokens(
    google: GoogleSandbox, client: dict
):
    token = _exchange(
        google, client, _consent(google, _authorize(google, client))["code"]
    )[1]
    google.state.clock.advance(3599)
    expired = google.api(token["access_token"]).get(
        "calendar/v3/calendars/primary/events"
    )
    assert expired.status_code == 401
    assert expired.json()["error"]["errors"][0]["reason"] == "authError"
    status, refreshed = _refresh(google, client, token["refresh_token"])
    assert status == 200
    assert "refresh_token" not in refreshed
    assert refreshed["expires_in"] == 3599
    assert (
        google.api(refreshed["access_token"])
        .get("calendar/v3/calendars/primary/events")
        .status_code
        == 200
    )


def test_revoke_kills_refresh_and_access_tokens(google: GoogleSandbox, client: dict):
    token = _exchange(
        google, client, _consent(google, _authorize(google, client))["code"]
    )[1]
    revoked = google.http.post(
        google.base + "revoke", data={"token": token["access_token"]}
    )
    assert revoked.status_code == 200
    status, body = _refresh(google, client, token["refresh_token"])
    assert (status, body) == (
        400,
        {
            "error": "invalid_grant",
            "error_description": "Token has been expired or revoked.",
        },
    )
    call = google.api(token["access_token"]).get("calendar/v3/calendars/primary/events")
    assert call.status_code == 401
    again = google.http.post(
        google.base + "revoke", data={"token": token["access_token"]}
    )
    assert again.status_code == 400
    # After a revoke the next consent is a first consent again.
    fresh = _exchange(
        google, client, _consent(google, _authorize(google, client))["code"]
    )[1]
    assert "refresh_token" in fresh


def test_google_auth_refresh_error_after_revoke(google: GoogleSandbox, client: dict):
    token = _exchange(
        google, client, _consent(google, _authorize(google, client))["code"]
    )[1]
    creds = Credentials(
        token=token["access_token"],
        refresh_token=token["refresh_token"],
        token_uri=google.base + "token",
        client_id=client["client_id"],
        client_secret=client["client_secret"],
    )
    http = httplib2.Http()
    creds.refresh(google_auth_httplib2.Request(http))
    assert creds.token != token["access_token"]
    assert creds.refresh_token == token["refresh_token"]
    google.control("POST", "grants/revoke", json={"email": ADA})
    with pytest.raises(
        RefreshError, match=r"invalid_grant: Token has been expired or revoked\."
    ):
        creds.refresh(google_auth_httplib2.Request(http))
    http.close()


def test_testing_mode_refresh_tokens_expire_after_7_days(google: GoogleSandbox):
    client = google.control(
        "POST", "clients", json={"redirect_uris": [REDIRECT], "testing": True}
    ).json()
    token = _exchange(
        google, client, _consent(google, _authorize(google, client))["code"]
    )[1]
    google.state.clock.advance(6 * 86400)
    assert _refresh(google, client, token["refresh_token"])[0] == 200
    google.state.clock.advance(86400)
    assert _refresh(google, client, token["refresh_token"]) == (
        400,
        {
            "error": "invalid_grant",
            "error_description": "Token has been expired or revoked.",
        },
    )


def test_101st_refresh_token_evicts_the_oldest(google: GoogleSandbox, client: dict):
    tokens = []
    for _ in range(101):
        tokens.append(
            google.token(ADA, [CALENDAR], client_id=client["client_id"])[
                "refresh_token"
            ]
        )
    assert _refresh(google, client, tokens[0])[0] == 400
    assert _refresh(google, client, tokens[1])[0] == 200
    assert _refresh(google, client, tokens[100])[0] == 200


def test_token_endpoint_errors(google: GoogleSandbox, client: dict):
    code = _consent(google, _authorize(google, client))["code"]
    assert _exchange(google, client, code, redirect_uri=REDIRECT + "/") == (
        400,
        {"error": "redirect_uri_mismatch", "error_description": "Bad Request"},
    )
    assert _exchange(google, client, code, client_secret="wrong") == (
        401,
        {"error": "invalid_client", "error_description": "Unauthorized"},
    )
    assert _exchange(
        google, client, code, client_id="nope.apps.googleusercontent.com"
    ) == (
        401,
        {
            "error": "invalid_client",
            "error_description": "The OAuth client was not found.",
        },
    )
    assert _exchange(google, client, code, code_verifier="b" * 43) == (
        400,
        {"error": "invalid_grant", "error_description": "Invalid code verifier."},
    )
    assert _exchange(google, client, code, code_verifier=None) == (
        400,
        {"error": "invalid_grant", "error_description": "Missing code verifier."},
    )
    assert (
        _exchange(google, client, code, grant_type="password")[1]["error"]
        == "unsupported_grant_type"
    )
    # The failed attempts did not burn the code.
    assert _exchange(google, client, code)[0] == 200


def test_pkce_plain_and_basic_client_auth(google: GoogleSandbox, client: dict):
    page = _authorize(
        google,
        client,
        code_challenge="plain-verifier-" + "x" * 30,
        code_challenge_method="plain",
    )
    code = _consent(google, page)["code"]
    auth = base64.b64encode(
        f"{client['client_id']}:{client['client_secret']}".encode()
    ).decode()
    response = google.http.post(
        google.base + "token",
        data={
            "code": code,
            "redirect_uri": REDIRECT,
            "grant_type": "authorization_code",
            "code_verifier": "plain-verifier-" + "x" * 30,
        },
        headers={"Authorization": f"Basic {auth}"},
    )
    assert response.status_code == 200


def test_authorization_endpoint_errors(google: GoogleSandbox, client: dict):
    base = google.base + "o/oauth2/v2/auth"
    mismatch = google.http.get(
        base,
        params={
            "client_id": client["client_id"],
            "redirect_uri": REDIRECT + "/",
            "response_type": "code",
            "scope": CALENDAR,
        },
    )
    assert mismatch.status_code == 400
    assert "Error 400: redirect_uri_mismatch" in mismatch.text
    unknown = google.http.get(
        base,
        params={
            "client_id": "x",
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": CALENDAR,
        },
    )
    assert unknown.status_code == 401
    assert "invalid_client" in unknown.text
    bad_scope = google.http.get(
        base,
        params={
            "client_id": client["client_id"],
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": "https://example.com/nope",
        },
    )
    assert bad_scope.status_code == 400
    assert "invalid_scope" in bad_scope.text


def test_deny_redirects_access_denied_with_state(google: GoogleSandbox, client: dict):
    redirect = _consent(google, _authorize(google, client), action="deny")
    assert redirect == {"error": "access_denied", "state": "xyz-123"}


def test_prompt_none(google: GoogleSandbox, client: dict):
    query = {
        "client_id": client["client_id"],
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": CALENDAR,
        "prompt": "none",
        "login_hint": ADA,
        "state": "s",
    }
    before = google.http.get(google.base + "o/oauth2/v2/auth", params=query)
    assert before.status_code == 302
    assert "error=login_required" in before.headers["location"]
    _exchange(
        google,
        client,
        _consent(google, _authorize(google, client, scope=CALENDAR))["code"],
    )
    after = google.http.get(google.base + "o/oauth2/v2/auth", params=query)
    assert after.status_code == 302
    assert "code=" in after.headers["location"]


def test_userinfo_endpoints(google: GoogleSandbox):
    token = google.access(ADA, ["openid", "email", "profile"])
    api = google.api(token)
    v1 = api.get("v1/userinfo").json()
    assert v1["email"] == ADA
    assert v1["email_verified"] is True
    assert len(v1["sub"]) == 21
    assert v1["name"] == "Ada"
    assert api.get("oauth2/v3/userinfo").json() == v1
    v2 = api.get("oauth2/v2/userinfo").json()
    assert v2["id"] == v1["sub"]
    assert v2["verified_email"] is True
    assert google.http.get(google.base + "v1/userinfo").status_code == 401
    info = google.http.get(
        google.base + "tokeninfo", params={"access_token": token}
    ).json()
    assert info["email"] == ADA
    assert int(info["expires_in"]) <= 3599


def test_missing_and_unknown_tokens_on_api_calls(google: GoogleSandbox):
    anonymous = google.http.get(google.base + "calendar/v3/calendars/primary/events")
    assert anonymous.status_code == 401
    error = anonymous.json()["error"]
    assert error["errors"][0]["reason"] == "required"
    assert error["status"] == "UNAUTHENTICATED"
    bogus = google.http.get(
        google.base + "gmail/v1/users/me/profile",
        headers={"Authorization": "Bearer ya29.bogus"},
    )
    assert bogus.status_code == 401
    assert bogus.json()["error"]["errors"][0] == {
        "domain": "global",
        "reason": "authError",
        "message": "Invalid Credentials",
        "locationType": "header",
        "location": "Authorization",
    }
    assert bogus.headers["www-authenticate"].startswith(
        'Bearer realm="https://accounts.google.com/"'
    )


def test_control_expire_tokens(google: GoogleSandbox):
    token = google.token(ADA, [CALENDAR])
    google.control("POST", "tokens/expire", json={"email": ADA})
    assert (
        google.api(token["access_token"])
        .get("calendar/v3/calendars/primary/events")
        .status_code
        == 401
    )


def test_openid_configuration_and_jwks(google: GoogleSandbox):
    config = google.http.get(google.base + ".well-known/openid-configuration").json()
    assert config["token_endpoint"] == google.base + "token"
    keys = google.http.get(config["jwks_uri"]).json()["keys"]
    assert keys[0]["alg"] == "RS256"


def test_refresh_token_dies_after_six_months_unused(
    google: GoogleSandbox, client: dict
):
    token = google.token(ADA, [CALENDAR], client_id=client["client_id"])
    google.state.clock.advance(150 * 86400)
    assert (
        _refresh(google, client, token["refresh_token"])[0] == 200
    )  # use resets the idle clock
    google.state.clock.advance(184 * 86400)
    assert _refresh(google, client, token["refresh_token"]) == (
        400,
        {
            "error": "invalid_grant",
            "error_description": "Token has been expired or revoked.",
        },
    )


def test_non_ascii_code_verifier_and_client_secret_are_oauth_errors(
    google: GoogleSandbox, client: dict
):
    """Client input outside ASCII is a failed check, never a 500.

    (``secrets.compare_digest`` raises TypeError on non-ASCII ``str`` and
    ``str.encode("ascii")`` raises UnicodeEncodeError: both used to escape as 500s.)
    """
    for method, challenge in (("S256", _challenge(VERIFIER)), ("plain", VERIFIER)):
        page = _authorize(
            google, client, code_challenge=challenge, code_challenge_method=method
        )
        code = _consent(google, page)["code"]
        status, body = _exchange(google, client, code, code_verifier="ü" * 50)
        assert (status, body) == (
            400,
            {"error": "invalid_grant", "error_description": "Invalid code verifier."},
        )
    page = _authorize(google, client)
    code = _consent(google, page)["code"]
    status, body = _exchange(google, client, code, client_secret="sécret")
    assert status == 401
    assert body["error"] == "invalid_client"
