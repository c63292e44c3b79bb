"""Google discovery documents (bundled copies) and validation against them.

* ``discovery`` — documents as route tables (methods, paths, parameters).
* ``params`` — query-parameter parsing and validation.
* ``schema`` — JSON bodies checked against discovery schemas.
* ``conformance`` — the test suite's check of every request/response exchange.
"""

from __future__ import annotations
