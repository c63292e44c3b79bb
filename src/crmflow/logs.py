"""Logging set-up: one format for crmflow and uvicorn, with secrets redacted.

Access logs print request paths with their query strings, and OAuth callbacks
carry authorization codes there (``?code=...&state=...``); the filter below
replaces the values of sensitive parameters before any handler formats them.
Never log tokens, headers, or message/event bodies in the first place: this
filter is the safety net, not the policy.
"""

from __future__ import annotations

import logging
import re

#: query parameters whose values never reach a log
SENSITIVE_PARAMS = (
    "code",
    "state",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "code_verifier",
    "password",
    "validationToken",
)
_PARAM = re.compile(
    r"(?P<key>(?:^|[?&;])(?:"
    + "|".join(SENSITIVE_PARAMS)
    + r"))=(?P<value>[^&;\s\"']*)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with sensitive query values and bearer tokens replaced."""
    text = _PARAM.sub(lambda m: f"{m.group('key')}={_REDACTED}", text)
    return _BEARER.sub(lambda m: m.group(1) + _REDACTED, text)


class RedactingFilter(logging.Filter):
    """Redacts string arguments and messages of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact(a) if isinstance(a, str) else a for a in record.args
            )
        return True


def configure_logging(level: str) -> None:
    """Send crmflow's and uvicorn's records to stderr in one format, redacted."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("crmflow").setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(level)
