"""CalDAV presets: where discovery starts for the big CalDAV providers.

* iCloud: ``https://caldav.icloud.com/`` answers RFC 6764 discovery and points
  at the account's own ``pNN-caldav.icloud.com`` host; app-specific password.
* Fastmail: ``https://caldav.fastmail.com/`` (Fastmail "Server names and
  ports"); app password with calendar access.
* Nextcloud: every installation has its own host; the DAV root is
  ``/remote.php/dav/`` (Nextcloud admin manual, "Service discovery"), used when
  the user gives only the server's address.
"""

from __future__ import annotations

from dataclasses import dataclass

from crmflow.domain.integrations import ProviderKey


@dataclass(frozen=True, slots=True)
class CalendarPreset:
    """Known CalDAV settings of a calendar provider."""

    #: stable id used by the API (``"icloud"``)
    key: str
    #: shown to users
    name: str
    #: how the integration is stored: ``apple`` for iCloud, ``caldav`` otherwise
    provider: ProviderKey
    #: where discovery starts; None when the user must give their server's address
    url: str | None
    #: appended to a server address given without a path (Nextcloud)
    dav_path: str | None
    #: whether a normal account password is refused
    app_password_required: bool
    #: what the user signs in with
    username_help: str
    #: where to get the password to enter here
    sign_in_help: str


CALENDAR_PRESETS: tuple[CalendarPreset, ...] = (
    CalendarPreset(
        key="icloud",
        name="iCloud Calendar",
        provider=ProviderKey.APPLE,
        url="https://caldav.icloud.com/",
        dav_path=None,
        app_password_required=True,
        username_help="Your Apple Account email address.",
        sign_in_help=(
            "An app-specific password: create one at account.apple.com -> Sign-In "
            "and Security -> App-Specific Passwords."
        ),
    ),
    CalendarPreset(
        key="fastmail",
        name="Fastmail Calendar",
        provider=ProviderKey.CALDAV,
        url="https://caldav.fastmail.com/",
        dav_path=None,
        app_password_required=True,
        username_help="Your Fastmail address, including the domain.",
        sign_in_help=(
            "An app password with calendar access: Settings -> Privacy & Security "
            "-> Manage app passwords and access."
        ),
    ),
    CalendarPreset(
        key="nextcloud",
        name="Nextcloud",
        provider=ProviderKey.CALDAV,
        url=None,
        dav_path="/remote.php/dav/",
        app_password_required=False,
        username_help="Your Nextcloud user name; also enter your server's address.",
        sign_in_help=(
            "Your Nextcloud password, or (with two-factor sign-in) an app password "
            "from Personal settings -> Security -> Devices & sessions."
        ),
    ),
)


def calendar_preset(key: str) -> CalendarPreset | None:
    """The preset with ``key``, or None."""
    return next((p for p in CALENDAR_PRESETS if p.key == key), None)
