"""The composition root: builds the services a process needs from settings.

``crmflow serve``/``demo`` and the tests call :func:`start_services`; nothing else
constructs engines or vaults.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    async def close(self) -> None:
        """Release connections."""
        await self.db.dispose()


async def start_services(settings: Settings) -> Services:
    """Build and check the services.

    Raises:
        ConfigError: a required setting is missing.
        CryptoError: the encryption keys are malformed or do not match the ones
            that sealed this database's secrets.
    """
    settings.require("encryption_keys", "session_secret")
    vault = Vault.from_setting(settings.encryption_keys)
    db = Database(settings.effective_database_url)
    try:
        await verify_keys(db, vault)
    except BaseException:
        await db.dispose()
        raise
    return Services(settings=settings, db=db, vault=vault)
