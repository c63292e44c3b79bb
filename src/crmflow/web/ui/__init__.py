"""Server-rendered UI (Jinja2, no client framework): session cookie, CSRF-protected forms.

Modules: ``routes`` (the pages), ``session`` (sign-in and the viewer of a
request), ``csrf`` (per-session form tokens), ``forms`` (form parsing and
validation), ``pages`` (template rendering and security headers). Templates live
in ``templates/``, the stylesheet and the small progressive-enhancement script in
``static/``; nothing is loaded from other origins.
"""

from __future__ import annotations
