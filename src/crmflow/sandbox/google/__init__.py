"""The Google sandbox: OAuth 2.0, Calendar API v3, Gmail API v1, push channels.

Modules (rules first, HTTP second):

* ``identity`` / ``oauth`` / ``idtoken`` — OAuth clients, grants, codes,
  tokens; consent page, token, revoke, userinfo endpoints;
* ``calendars`` / ``recurrence`` / ``eventtime`` / ``calendar`` — Calendar
  data and rules; RRULE expansion; EventDateTime handling; HTTP handlers;
* ``mail`` / ``mime`` / ``search`` / ``gmail`` — mailboxes, RFC 2822 ->
  payload JSON, ``q`` search subset; HTTP handlers;
* ``push`` — watch channels and notification delivery;
* ``api`` / ``fields`` / ``errors`` — the discovery-driven dispatcher, partial
  responses, Google's error envelopes;
* ``store`` — the Google part of the sandbox state; ``control`` — its control
  API; ``app`` — the mountable ASGI app; ``demo`` — demo seed data.
"""

from __future__ import annotations
