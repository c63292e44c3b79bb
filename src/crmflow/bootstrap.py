"""The composition root: builds the services a process needs from settings.

``crmflow serve``/``demo`` and the tests call :func:`start_services`; nothing else
constructs engines or vaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from crmflow.config import Settings
from crmflow.store.crypto import Vault
from crmflow.store.db import Database
from crmflow.store.keys import verify_keys


@dataclass
class Services:
    """Long-lived objects shared by requests and jobs."""

    settings: Settings
    #: the application's database (non-owner role on PostgreSQL)
    db: Database
    vault: Vault
    _system_db: Database | None = field(default=None, repr=False)
    #: called after a push notification made an account due: an in-process
    #: runner registers its wake-up here so the sync starts at once (workers
    #: on PostgreSQL hear it through ``NOTIFY`` instead)
    push_listeners: list[Callable[[], None]] = field(default_factory=list)

    def pushed(self) -> None:
        """Tell the listeners that a notification made an account due."""
        for listener in self.push_listeners:
            listener()

    @property
    def system_db(self) -> Database:
        """A database whose sessions see every tenant: the owner role's on
        PostgreSQL (made on first use), the one database on SQLite. For the
        work that spans tenants: the sync schedule, webhook look-ups."""
        settings = self.settings
        admin_url = settings.effective_admin_database_url
        if admin_url == settings.effective_database_url:
            return self.db
        if self._system_db is None:
            self._system_db = Database(admin_url)
        return self._system_db

    async def close(self) -> None:
        """Release connections."""
        await self.db.dispose()
        if self._system_db is not None:
            await self._system_db.dispose()
            self._system_db = None


async def start_services(settings: Settings) -> Services:
    """Build and check the services.

    Raises:
        ConfigError: a required setting is missing.
        CryptoError: the encryption keys are malformed or do not match the ones
            that sealed this database's secrets.
    """
    settings.require("encryption_keys", "session_secret")
    vault = Vault.from_setting(settings.encryption_keys)
    # the services live as long as their event loop: their connections too
    db = Database(settings.effective_database_url, pooled=True)
    try:
        await verify_keys(db, vault)
    except BaseException:
        await db.dispose()
        raise
    return Services(settings=settings, db=db, vault=vault)
