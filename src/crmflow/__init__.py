"""crmflow: real per-user mailbox and calendar integrations for a CRM."""

from __future__ import annotations

__version__ = "0.1.0"
