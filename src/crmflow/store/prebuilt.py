"""Helpers for statements built once, at import, with bound parameters.

A sync run executes the same dozen statements every time. Building one with
SQLAlchemy's expression language, and working out its cache key on each
execution, costs more CPU than running it on SQLite (a third of a small
webhook run went there). A statement built once keeps its cache key, so the
hot paths build nothing: they pass the values that change as parameters.

Conventions: the acting user's rows are matched by :func:`owned` (parameters
``org`` and ``user``, filled by :func:`owner`); other parameters take the
type of the column they stand for, so values are converted exactly as in a
statement built on the spot.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.sql.elements import BindParameter

from crmflow.domain.tenancy import TenantContext


def param(name: str, column: Any, *, expanding: bool = False) -> BindParameter[Any]:
    """A parameter named ``name`` of ``column``'s type (``expanding``: a list
    of values, for ``IN``)."""
    return bindparam(name, type_=column.type, expanding=expanding)


def owned(model: Any) -> tuple[Any, Any]:
    """The conditions for rows of the acting user in the acting organization
    (parameters ``org`` and ``user``)."""
    return (
        model.organization_id == param("org", model.organization_id),
        model.user_id == param("user", model.user_id),
    )


def owner(ctx: TenantContext) -> dict[str, Any]:
    """The values of :func:`owned`'s parameters for ``ctx``."""
    return {"org": ctx.organization_id, "user": ctx.user_id}
