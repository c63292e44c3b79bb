"""Microsoft identity platform rules: app registrations, consent, codes, rotating tokens.

HTTP lives in :mod:`crmflow.sandbox.microsoft.login`; this module holds the
rules, from "Microsoft identity platform and OAuth 2.0 authorization code flow"
and "Refresh tokens in the Microsoft identity platform" (microsoft-graph.md §1,
checklist 24-25):

* Tenants: ``common``, ``organizations``, ``consumers``, a tenant GUID or a
  verified domain. Sandbox users on consumer domains (outlook.com, hotmail.com,
  live.com, msn.com) are personal accounts in the MSA tenant
  ``9188040d-6c67-4c5b-b112-36a304b66dad``; everyone else is a work account of
  the one sandbox tenant. ``organizations`` refuses personal accounts,
  ``consumers`` work accounts (AADSTS50020). A code "must be redeemed at the
  same tenant it was issued for" (AADSTS700005).
* Scopes: Graph delegated permissions in short (``Calendars.ReadWrite``) or
  fully-qualified (``https://graph.microsoft.com/Calendars.ReadWrite``) form,
  ``/.default``, plus the OIDC scopes. One resource per token request
  (AADSTS28000).
* Codes live about 10 minutes, are single-use (AADSTS54005) and, with PKCE,
  need the matching ``code_verifier`` (AADSTS50148; S256 or plain).
* ``refresh_token`` only with ``offline_access``; ``id_token`` only with
  ``openid``.
* Access tokens live a random 60-90 minutes ("75 average"); ``expires_in`` and
  ``ext_expires_in`` carry the lifetime.
* Refresh tokens "replace themselves with a fresh token upon every use" and the
  platform "doesn't revoke old refresh tokens when used": the old token stays
  valid. They die after 90 days of inactivity (AADSTS700082), on revocation /
  password reset (AADSTS50173) and on the control API's demands.
* Refresh scopes must be "equivalent to or a subset of" the consented ones;
  otherwise AADSTS65001 with ``suberror: consent_required``.

Every method must be called with ``state.lock`` held.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from crmflow.sandbox.microsoft.errors import AadError

__all__ = [
    "CONSUMER_DOMAINS",
    "GRAPH_RESOURCE",
    "MSA_TENANT_ID",
    "OIDC_SCOPES",
    "SANDBOX_TENANT_ID",
    "AccessToken",
    "AppRegistration",
    "AuthCode",
    "Identity",
    "IdentityData",
    "PendingAuthorization",
    "RefreshToken",
    "TokenGrant",
]

GRAPH_RESOURCE = "https://graph.microsoft.com/"
#: the consumer (MSA) tenant id, as documented for personal accounts
MSA_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
#: the one work tenant of the sandbox (stable across runs)
SANDBOX_TENANT_ID = str(
    uuid.uuid5(uuid.NAMESPACE_URL, "crmflow-sandbox:microsoft:tenant")
)
#: domains whose users are personal Microsoft accounts
CONSUMER_DOMAINS = frozenset({"outlook.com", "hotmail.com", "live.com", "msn.com"})
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
#: Graph delegated permissions the sandbox knows (canonical spelling)
GRAPH_SCOPES = (
    "User.Read",
    "User.ReadBasic.All",
    "Calendars.Read",
    "Calendars.ReadBasic",
    "Calendars.ReadWrite",
    "Mail.Read",
    "Mail.ReadBasic",
    "Mail.ReadWrite",
    "Mail.Send",
    "MailboxSettings.Read",
    "MailboxSettings.ReadWrite",
)
_GRAPH_CASEFOLD = {s.casefold(): s for s in GRAPH_SCOPES}
#: "The authorization code is short lived, typically expiring after about 10 minutes."
CODE_LIFETIME_S = 600
#: "90 days otherwise" (non-SPA refresh tokens); inactivity -> AADSTS700082
REFRESH_INACTIVITY_S = 90 * 24 * 3600
#: access tokens: "random 60-90 minutes (75 average)"
ACCESS_MIN_S = 60 * 60
ACCESS_MAX_S = 90 * 60


def is_personal(email: str) -> bool:
    """True for a personal (MSA) sandbox account."""
    return email.rsplit("@", 1)[-1] in CONSUMER_DOMAINS


def tenant_of(email: str) -> str:
    """The ``tid`` of a sandbox user."""
    return MSA_TENANT_ID if is_personal(email) else SANDBOX_TENANT_ID


@dataclass
class AppRegistration:
    """An Entra app registration (confidential web client)."""

    client_id: str
    client_secret: str
    #: exact-match list
    redirect_uris: list[str] = field(default_factory=list)
    name: str = "crmflow"
    #: Graph permissions configured on the registration (used by ``/.default``)
    permissions: list[str] = field(default_factory=lambda: list(GRAPH_SCOPES))

    def public_json(self) -> dict[str, object]:
        """Control API form (the secret is included: it is a sandbox)."""
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": list(self.redirect_uris),
            "name": self.name,
            "permissions": list(self.permissions),
        }


@dataclass
class Grant:
    """Scopes one user consented to for one app."""

    email: str
    client_id: str
    scopes: list[str]


@dataclass
class PendingAuthorization:
    """An authorize request waiting on the consent page."""

    id: str
    tenant: str
    client_id: str
    redirect_uri: str
    scopes: list[str]
    state: str | None
    nonce: str | None
    response_mode: str
    code_challenge: str | None
    code_challenge_method: str | None
    login_hint: str | None
    prompt: str | None
    created_ms: int


@dataclass
class AuthCode:
    """An authorization code waiting for redemption."""

    code: str
    email: str
    client_id: str
    redirect_uri: str
    tenant: str
    scopes: list[str]
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    expires_ms: int
    used: bool = False


@dataclass
class RefreshToken:
    """An issued refresh token."""

    token: str
    email: str
    client_id: str
    scopes: list[str]
    issued_ms: int
    last_used_ms: int
    #: AADSTS code answered when the token is used (None = valid):
    #: 50173 revoked, 70008 / 700082 expired, 70000 invalid
    dead_code: int | None = None


@dataclass
class AccessToken:
    """An issued access token."""

    token: str
    email: str
    client_id: str
    scopes: list[str]
    expires_ms: int
    revoked: bool = False


@dataclass
class IdentityData:
    """Everything :class:`Identity` persists."""

    apps: dict[str, AppRegistration] = field(default_factory=dict)
    #: key "email client_id"
    grants: dict[str, Grant] = field(default_factory=dict)
    pending: dict[str, PendingAuthorization] = field(default_factory=dict)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenGrant:
    """A successful token request before rendering."""

    access: AccessToken
    refresh: RefreshToken | None
    #: include an id_token
    openid: bool
    nonce: str | None
    #: lifetime of the access token in seconds (expires_in)
    lifetime_s: int


def pkce_s256(verifier: str) -> str:
    """``BASE64URL(SHA256(verifier))`` without padding (RFC 7636 §4.2).

    A non-ASCII verifier cannot match; it is hashed as UTF-8 so that it fails
    the comparison (AADSTS50148) instead of raising.
    """
    digest = hashlib.sha256(verifier.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of client input that may be non-ASCII.

    ``secrets.compare_digest`` raises TypeError for non-ASCII ``str``.
    """
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def parse_scopes(raw: str) -> tuple[list[str], str | None]:
    """Split a ``scope`` parameter into canonical scopes and their resource.

    Graph permissions are returned in short canonical form (``Calendars.ReadWrite``),
    ``/.default`` as ``.default``, OIDC scopes lower-case.

    Raises:
        AadError: AADSTS70011 for an unknown permission, AADSTS28000 for scopes
            of more than one resource.
    """
    scopes: list[str] = []
    resources: set[str] = set()
    for item in raw.split():
        low = item.casefold()
        if low in OIDC_SCOPES:
            scopes.append(low)
            continue
        short = item
        if low.startswith(GRAPH_RESOURCE):
            short = item[len(GRAPH_RESOURCE) :]
            resources.add(GRAPH_RESOURCE)
        elif low.startswith("00000003-0000-0000-c000-000000000000/"):
            short = item.split("/", 1)[1]
            resources.add(GRAPH_RESOURCE)
        elif "://" in item or "/" in item:
            resources.add(item.rsplit("/", 1)[0])
            raise AadError(70011, {"scope": raw})
        else:
            resources.add(GRAPH_RESOURCE)
        if short.casefold() == ".default":
            scopes.append(".default")
            continue
        canonical = _GRAPH_CASEFOLD.get(short.casefold())
        if canonical is None:
            raise AadError(70011, {"scope": raw})
        scopes.append(canonical)
    if len(resources) > 1:
        raise AadError(28000, {"scope": raw})
    if not scopes:
        raise AadError(900144, {"param": "scope"})
    return list(dict.fromkeys(scopes)), GRAPH_RESOURCE if resources else None


def response_scope(scopes: list[str]) -> str:
    """The ``scope`` of a token response: Graph permissions then OIDC scopes, no offline_access."""
    graph: list[str] = [s for s in scopes if s not in OIDC_SCOPES]
    oidc: list[str] = [s for s in ("profile", "openid", "email") if s in scopes]
    return " ".join(graph + oidc)


class Identity:
    """Identity rules over :class:`IdentityData`. Call with the state lock held."""

    def __init__(self, data: IdentityData) -> None:
        self.data = data

    # -- app registrations ---------------------------------------------------------

    def register_app(
        self,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        redirect_uris: list[str] | None = None,
        name: str = "crmflow",
    ) -> AppRegistration:
        """Register (or replace) an app; a GUID client id and a secret are generated when absent."""
        app = AppRegistration(
            client_id=client_id or str(uuid.uuid4()),
            # Entra secrets look like "abc8Q~…" (40 characters)
            client_secret=client_secret
            or secrets.token_urlsafe(24)[:3] + "8Q~" + secrets.token_urlsafe(27)[:34],
            redirect_uris=list(redirect_uris or []),
            name=name,
        )
        self.data.apps[app.client_id] = app
        return app

    def default_app(self) -> AppRegistration:
        """The first registered app, registering one when there is none."""
        if not self.data.apps:
            return self.register_app(name="crmflow sandbox")
        return next(iter(self.data.apps.values()))

    def app(self, client_id: str | None, tenant: str) -> AppRegistration:
        """Return the registration of ``client_id``.

        Raises:
            AadError: AADSTS900144 without client_id, AADSTS700016 for an unknown app.
        """
        if not client_id:
            raise AadError(900144, {"param": "client_id"})
        found = self.data.apps.get(client_id)
        if found is None:
            raise AadError(700016, {"client_id": client_id, "tenant": tenant})
        return found

    def authenticate(
        self, client_id: str | None, secret: str | None, tenant: str
    ) -> AppRegistration:
        """Check confidential-client credentials at the token endpoint.

        Raises:
            AadError: unknown app (700016), missing secret (7000218), wrong secret (7000215).
        """
        app = self.app(client_id, tenant)
        if not secret:
            raise AadError(7000218)
        if not _same(secret, app.client_secret):
            raise AadError(7000215, {"client_id": app.client_id})
        return app

    # -- tenants -------------------------------------------------------------------

    def check_tenant(self, tenant: str, domains: set[str]) -> None:
        """Raise AADSTS90002 unless ``tenant`` names a sandbox tenant or alias."""
        low = tenant.casefold()
        if low in {
            "common",
            "organizations",
            "consumers",
            SANDBOX_TENANT_ID,
            MSA_TENANT_ID,
        }:
            return
        if low in domains:
            return
        raise AadError(90002, {"tenant": tenant})

    @staticmethod
    def user_allowed(tenant: str, email: str, client_id: str) -> AadError | None:
        """The AADSTS50020 error when ``email`` cannot sign in at ``tenant``, else None."""
        low = tenant.casefold()
        personal = is_personal(email)
        if (low == "organizations" and personal) or (
            low == "consumers" and not personal
        ):
            return AadError(
                50020,
                {
                    "email": email,
                    "idp": "live.com"
                    if personal
                    else f"https://sts.windows.net/{SANDBOX_TENANT_ID}/",
                    "tenant": tenant,
                    "client_id": client_id,
                },
            )
        if (
            low not in {"common", "organizations", "consumers"}
            and low
            in {
                SANDBOX_TENANT_ID,
                MSA_TENANT_ID,
            }
            and low != tenant_of(email)
        ):
            return AadError(
                50020,
                {
                    "email": email,
                    "idp": "live.com",
                    "tenant": tenant,
                    "client_id": client_id,
                },
            )
        return None

    # -- consent -------------------------------------------------------------------

    def grant(self, email: str, client_id: str) -> Grant | None:
        """The user's grant to the app, if any."""
        return self.data.grants.get(f"{email} {client_id}")

    def expand_default(self, app: AppRegistration, scopes: list[str]) -> list[str]:
        """Replace ``.default`` with the app's configured permissions."""
        out: list[str] = []
        for scope in scopes:
            out.extend(app.permissions if scope == ".default" else [scope])
        return list(dict.fromkeys(out))

    def consent(
        self,
        pending: PendingAuthorization,
        *,
        email: str,
        granted: list[str],
        now_ms: int,
    ) -> AuthCode:
        """The user consented to ``granted`` (a subset of the request): record and issue a code."""
        self.data.pending.pop(pending.id, None)
        key = f"{email} {pending.client_id}"
        grant = self.data.grants.get(key)
        if grant is None:
            grant = Grant(email=email, client_id=pending.client_id, scopes=[])
            self.data.grants[key] = grant
        grant.scopes = sorted(set(grant.scopes) | set(granted))
        code = AuthCode(
            # real codes start "0.A" (work) or "M." (personal) and are long
            code=("M." if is_personal(email) else "0.A") + secrets.token_urlsafe(96),
            email=email,
            client_id=pending.client_id,
            redirect_uri=pending.redirect_uri,
            tenant=pending.tenant,
            scopes=list(granted),
            code_challenge=pending.code_challenge,
            code_challenge_method=pending.code_challenge_method,
            nonce=pending.nonce,
            expires_ms=now_ms + CODE_LIFETIME_S * 1000,
        )
        self.data.codes[code.code] = code
        return code

    def revoke_grants(self, email: str, client_id: str | None = None) -> int:
        """Remove the user's consent (to one app or all) and kill its tokens (AADSTS50173)."""
        keys = [
            k
            for k, g in self.data.grants.items()
            if g.email == email and (client_id is None or g.client_id == client_id)
        ]
        for key in keys:
            grant = self.data.grants.pop(key)
            self.kill_refresh_tokens(grant.email, 50173, client_id=grant.client_id)
            for at in self.data.access_tokens.values():
                if at.email == grant.email and at.client_id == grant.client_id:
                    at.revoked = True
        return len(keys)

    # -- token endpoint --------------------------------------------------------------

    def redeem_code(
        self,
        app: AppRegistration,
        *,
        tenant: str,
        code: str | None,
        redirect_uri: str | None,
        code_verifier: str | None,
        lifetime_s: int,
        now_ms: int,
    ) -> TokenGrant:
        """``grant_type=authorization_code``.

        Raises:
            AadError: 900144 (missing code / redirect_uri), 9002313 (malformed
                code), 70008 (unknown or expired code), 54005 (already
                redeemed), 700005 (another tenant), 500112 (redirect_uri
                differs), 50148 (PKCE verifier missing or wrong).
        """
        if not code:
            raise AadError(900144, {"param": "code"})
        found = self.data.codes.get(code)
        if found is None:
            if not code.startswith(("0.A", "M.")):
                raise AadError(9002313)
            raise AadError(70008)
        if found.used:
            raise AadError(54005)
        if found.expires_ms <= now_ms or found.client_id != app.client_id:
            raise AadError(70008)
        if tenant.casefold() not in {found.tenant.casefold(), tenant_of(found.email)}:
            raise AadError(700005)
        if not redirect_uri:
            raise AadError(900144, {"param": "redirect_uri"})
        if redirect_uri != found.redirect_uri:
            raise AadError(500112, {"got": redirect_uri, "want": found.redirect_uri})
        if found.code_challenge is not None:
            if not code_verifier:
                raise AadError(50148)
            method = found.code_challenge_method or "plain"
            expected = pkce_s256(code_verifier) if method == "S256" else code_verifier
            if not _same(expected, found.code_challenge):
                raise AadError(50148)
        found.used = True
        return self._issue(
            app, found.email, found.scopes, found.nonce, lifetime_s, now_ms
        )

    def refresh(
        self,
        app: AppRegistration,
        *,
        refresh_token: str | None,
        scope: str | None,
        lifetime_s: int,
        now_ms: int,
    ) -> TokenGrant:
        """``grant_type=refresh_token``: a new access token and a new refresh token.

        Raises:
            AadError: 900144 (missing token), 9002313 (unknown token), the token's
                ``dead_code`` (50173 / 70008 / 700082 / 70000), 700082 after 90
                days of inactivity, 70000 (another app's token), 65001 with
                ``suberror: consent_required`` (scope beyond the grant).
        """
        if not refresh_token:
            raise AadError(900144, {"param": "refresh_token"})
        rt = self.data.refresh_tokens.get(refresh_token)
        if rt is None:
            raise AadError(9002313)
        if (
            rt.dead_code is None
            and now_ms - rt.last_used_ms > REFRESH_INACTIVITY_S * 1000
        ):
            rt.dead_code = 700082
        if rt.dead_code is not None:
            issued = datetime.fromtimestamp(rt.issued_ms / 1000, UTC).strftime(
                "%m/%d/%Y %H:%M:%S"
            )
            raise AadError(rt.dead_code, {"issued": issued})
        if rt.client_id != app.client_id:
            raise AadError(70000)
        scopes = list(rt.scopes)
        if scope:
            wanted, _resource = parse_scopes(scope)
            wanted = self.expand_default(app, wanted)
            grant = self.grant(rt.email, rt.client_id)
            consented = set(grant.scopes if grant else []) | {
                "openid",
                "profile",
                "email",
                "offline_access",
            }
            missing = [s for s in wanted if s not in consented]
            if missing:
                raise AadError(
                    65001,
                    {"client_id": app.client_id, "name": app.name},
                    suberror="consent_required",
                )
            # refresh tokens keep their original scope set; the access token
            # carries the requested subset plus the OIDC scopes of the grant
            scopes = list(
                dict.fromkeys(wanted + [s for s in rt.scopes if s in OIDC_SCOPES])
            )
        rt.last_used_ms = now_ms
        return self._issue(
            app, rt.email, scopes, None, lifetime_s, now_ms, rotate_from=rt
        )

    def issue_direct(
        self,
        app: AppRegistration,
        *,
        email: str,
        scopes: list[str],
        lifetime_s: int,
        now_ms: int,
    ) -> TokenGrant:
        """Control API: consent and issue tokens without the browser dance."""
        key = f"{email} {app.client_id}"
        grant = self.data.grants.setdefault(
            key, Grant(email=email, client_id=app.client_id, scopes=[])
        )
        grant.scopes = sorted(set(grant.scopes) | set(scopes))
        return self._issue(app, email, scopes, None, lifetime_s, now_ms)

    def _issue(
        self,
        app: AppRegistration,
        email: str,
        scopes: list[str],
        nonce: str | None,
        lifetime_s: int,
        now_ms: int,
        rotate_from: RefreshToken | None = None,
    ) -> TokenGrant:
        self._drop_stale(now_ms)
        access = AccessToken(
            # opaque to clients (Graph: "access tokens are opaque")
            token="EwA" + secrets.token_urlsafe(180),
            email=email,
            client_id=app.client_id,
            scopes=[
                s
                for s in scopes
                if s not in OIDC_SCOPES or s in {"openid", "profile", "email"}
            ],
            expires_ms=now_ms + lifetime_s * 1000,
        )
        self.data.access_tokens[access.token] = access
        refresh = None
        offline = "offline_access" in scopes or (
            rotate_from is not None and "offline_access" in rotate_from.scopes
        )
        if offline:
            # A new refresh token every time; the old one is left valid
            # (refresh-tokens.md: the platform "doesn't revoke old refresh tokens").
            refresh = RefreshToken(
                token=("M.C5" if is_personal(email) else "1.A")
                + secrets.token_urlsafe(210),
                email=email,
                client_id=app.client_id,
                scopes=list(rotate_from.scopes if rotate_from else scopes),
                issued_ms=now_ms,
                last_used_ms=now_ms,
            )
            self.data.refresh_tokens[refresh.token] = refresh
        return TokenGrant(
            access=access,
            refresh=refresh,
            openid="openid" in scopes,
            nonce=nonce,
            lifetime_s=lifetime_s,
        )

    def _drop_stale(self, now_ms: int) -> None:
        # Keep a long demo bounded: forget access tokens expired a day ago.
        cutoff = now_ms - 24 * 3600 * 1000
        for key in [
            k for k, t in self.data.access_tokens.items() if t.expires_ms < cutoff
        ]:
            del self.data.access_tokens[key]

    # -- use and revoke ------------------------------------------------------------------

    def access_token(self, token: str) -> AccessToken | None:
        """The access token record (live or not), or None when unknown."""
        return self.data.access_tokens.get(token)

    def kill_refresh_tokens(
        self, email: str, code: int, *, client_id: str | None = None
    ) -> int:
        """Make the user's refresh tokens answer AADSTS ``code``; return how many changed."""
        count = 0
        for rt in self.data.refresh_tokens.values():
            if (
                rt.email == email
                and (client_id is None or rt.client_id == client_id)
                and rt.dead_code is None
            ):
                rt.dead_code = code
                count += 1
        return count

    def expire_access_tokens(self, email: str) -> int:
        """Revoke the user's access tokens (they then get 401 on Graph)."""
        count = 0
        for at in self.data.access_tokens.values():
            if at.email == email and not at.revoked:
                at.revoked = True
                count += 1
        return count
