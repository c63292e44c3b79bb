"""Who is acting: the tenant context every request and job runs in.

Visibility rules (enforced by repositories on every database, and again by row
level security policies on PostgreSQL):

* **Personal rows** (integrations, mail and calendar accounts, messages, sync logs,
  API tokens): the acting user's own rows in the acting organization. A
  ``super_admin`` may *read* every member's personal rows of their organization,
  never write them.
* **Shared CRM rows** (appointments, contacts): every member of the organization
  reads them; any member creates them; an appointment is changed or deleted by its
  owner or an ``admin``/``super_admin``; contacts by any member.
* **Organization secrets** (``oauth_secrets``): used by the service itself; set by
  admins; never returned to any user.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass


class Role(enum.StrEnum):
    """A user's role in an organization."""

    #: reads the organization's CRM rows, manages their own integrations
    MEMBER = "member"
    #: also manages members, organization settings and anyone's appointments
    ADMIN = "admin"
    #: also reads every member's personal rows (integrations, mail, sync logs)
    SUPER_ADMIN = "super_admin"

    @property
    def is_admin(self) -> bool:
        """Whether this role may administer the organization."""
        return self in (Role.ADMIN, Role.SUPER_ADMIN)


@dataclass(frozen=True, slots=True)
class TenantContext:
    """The acting user, their organization, and their role there.

    Built only after the membership has been verified; jobs rebuild it from the
    row they work on.
    """

    #: the acting user
    user_id: uuid.UUID
    #: the organization the request acts in
    organization_id: uuid.UUID
    #: the user's role in that organization
    role: Role

    @property
    def is_admin(self) -> bool:
        """Whether the acting user administers the organization."""
        return self.role.is_admin

    @property
    def reads_all_personal_rows(self) -> bool:
        """Whether the acting user may read other members' personal rows."""
        return self.role is Role.SUPER_ADMIN
