"""Persistence: SQLAlchemy models, migrations, tenancy and the token vault.

Nothing outside ``store/`` sees an ORM row; repositories take a
:class:`~crmflow.domain.tenancy.TenantContext` and return plain values.
"""

from __future__ import annotations
