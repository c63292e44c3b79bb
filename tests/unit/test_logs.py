from __future__ import annotations

import logging

from crmflow.logs import RedactingFilter, redact


def test_redacts_oauth_query_values():
    line = '127.0.0.1:5 - "GET /oauth/callback?state=abc123&code=4/0AQlEd-secret&scope=x HTTP/1.1" 302'
    out = redact(line)
    assert "abc123" not in out
    assert "4/0AQlEd-secret" not in out
    assert "scope=x" in out
    assert "code=[redacted]" in out


def test_redacts_bearer_tokens():
    assert "crm_abc" not in redact("Authorization: Bearer crm_abc.def")


def test_filter_rewrites_access_log_arguments(caplog):
    logger = logging.getLogger("crmflow.tests.access")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO):
        logger.info('%s - "%s %s"', "127.0.0.1", "GET", "/cb?code=SECRETCODE&x=1")
    assert "SECRETCODE" not in caplog.text
    assert "x=1" in caplog.text
