"""Errors of the connections service (all :class:`~crmflow.errors.CrmflowError`;
each message says what happened and what to do)::

    ConfigError
    └── ProviderNotConfigured     no OAuth client for this provider
    Conflict
    └── AmbiguousIntegration      ``kind`` alone names two integrations
    ValidationFailed
    └── ConnectCancelled          the person declined at the provider

Provider failures keep their own classes (``providers/base.py``): a refresh
that fails with :class:`~crmflow.providers.base.AuthError` means "reconnect".
"""

from __future__ import annotations

from crmflow.errors import ConfigError, Conflict, ValidationFailed


class ProviderNotConfigured(ConfigError):
    """This provider has no OAuth client; an administrator must add its client id
    and secret."""


class AmbiguousIntegration(Conflict):
    """More than one integration has this kind; name the provider."""


class ConnectCancelled(ValidationFailed):
    """The sign-in was cancelled at the provider; nothing was changed."""
