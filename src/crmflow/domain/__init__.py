"""Pure types and rules of crmflow: standard library only, no I/O."""

from __future__ import annotations
