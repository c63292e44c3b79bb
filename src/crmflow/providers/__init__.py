"""Provider adapters: one package per vendor behind the ports in ``providers/base.py``.

Adapters translate every library and HTTP error into the ``ProviderError`` tree
at the boundary; nothing third-party escapes ``providers/``. Vendor packages
never import each other; shared code lives in ``base.py`` and ``_http.py``.
"""

from __future__ import annotations
