"""``python -m crmflow`` runs the command-line interface."""

from __future__ import annotations

from crmflow.cli import main

raise SystemExit(main())
