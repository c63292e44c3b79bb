"""JSON REST API, authenticated with personal API tokens (``Authorization: Bearer``).

Cookies are never accepted here, so the API needs no CSRF protection.
"""

from __future__ import annotations
