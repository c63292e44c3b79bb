"""Key ring checks at start-up, and rotation of every stored secret.

``verify_keys`` runs when the app starts: each configured key must open the
canary it sealed when it was first used, so a wrong or mistyped key stops
start-up with a clear message instead of failing at a user's first sync.

``rotate`` re-seals every secret under the newest key in batches, committing
each batch, so an interrupted rotation simply continues where it stopped when run
again (rows already under the newest key are skipped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select

from crmflow.domain.secret import Secret
from crmflow.errors import CryptoError, TokenDecryptError
from crmflow.store import models
from crmflow.store.crypto import ENV_NAME, Vault, context_for
from crmflow.store.db import Database

_CANARY = Secret("crmflow key check")
_BATCH_ROWS = 200


async def verify_keys(db: Database, vault: Vault) -> None:
    """Check every configured key against its canary; record the current key's.

    Raises:
        CryptoError: a key does not open the canary it sealed earlier.
    """
    async with db.admin() as session:
        rows = {
            k.key_id: k.canary for k in await session.scalars(select(models.VaultKey))
        }
        for kid in vault.key_ids:
            stored = rows.get(kid)
            if stored is None:
                continue
            try:
                vault.open(stored, context_for("vault_keys", "canary", kid))
            except TokenDecryptError:
                raise CryptoError(
                    f"{ENV_NAME}: key {kid!r} is not the key that was used with this "
                    "database under that id. Restore the original key value; a new key "
                    "needs a new id."
                ) from None
        current = vault.current_key_id
        if current not in rows:
            session.add(
                models.VaultKey(
                    key_id=current,
                    canary=vault.seal(
                        _CANARY, context_for("vault_keys", "canary", current)
                    ),
                )
            )


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What a rotation did."""

    rotated: int
    already_current: int
    total: int


async def count_secrets(admin: Database) -> int:
    """Every stored secret, across all tenants (admin database)."""
    total = 0
    async with admin.admin() as session:
        for model, column in models.ENCRYPTED_COLUMNS:
            col = getattr(model, column)
            total += int(
                await session.scalar(select(func.count()).where(col.is_not(None))) or 0
            )
    return total


async def rotate(
    admin: Database,
    vault: Vault,
    progress: Callable[[int], None] = lambda _n: None,
) -> RotationReport:
    """Re-seal every stored secret under the newest key (admin database).

    ``progress(n)`` is called after each committed batch with the number of
    secrets just handled.

    Raises:
        TokenDecryptError: a secret cannot be opened with any configured key
            (nothing of that batch is written; earlier batches stay rotated).
    """
    total = await count_secrets(admin)
    current_prefix = f"v1:{vault.current_key_id}:"
    rotated = 0
    for model, column in models.ENCRYPTED_COLUMNS:
        table = model.__tablename__
        col = getattr(model, column)
        pk = model.__mapper__.primary_key[0]
        last_id = None
        while True:
            async with admin.admin() as session:
                stmt = (
                    select(model)
                    .where(col.is_not(None), ~col.startswith(current_prefix))
                    .order_by(pk)
                    .limit(_BATCH_ROWS)
                )
                if last_id is not None:
                    stmt = stmt.where(pk > last_id)
                batch = list(await session.scalars(stmt))
                if not batch:
                    break
                for row in batch:
                    row_id = getattr(row, pk.name)
                    ctx = context_for(table, column, row_id)
                    setattr(
                        row,
                        column,
                        vault.seal(vault.open(getattr(row, column), ctx), ctx),
                    )
                    last_id = row_id
            rotated += len(batch)
            progress(len(batch))
    return RotationReport(rotated=rotated, already_current=total - rotated, total=total)
