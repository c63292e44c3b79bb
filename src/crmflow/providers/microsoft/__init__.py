"""Microsoft 365: the Microsoft identity platform (microsoft-graph.md section 1).

Public surface: :class:`MicrosoftOAuth`, the
:class:`~crmflow.providers.base.OAuthProvider` adapter. Graph calendar and mail
adapters join this package with the sync and mail work.
"""

from __future__ import annotations

from crmflow.providers.microsoft._oauth import MicrosoftEndpoints, MicrosoftOAuth

__all__ = ["MicrosoftEndpoints", "MicrosoftOAuth"]
