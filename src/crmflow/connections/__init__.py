"""Connections: connecting, refreshing and disconnecting a user's mail and
calendar accounts (OAuth for Google and Microsoft, verified credentials for
IMAP/SMTP and CalDAV).

This is the service layer between the web/jobs entry points and the store and
provider adapters: it decides, the store remembers, the providers talk HTTP.
"""

from __future__ import annotations
