"""The discovery conformance check itself, and the bundled discovery documents."""

from __future__ import annotations

import hashlib
import json

import pytest
from googleapiclient.discovery_cache import get_static_doc

from crmflow.sandbox.specs.conformance import ConformanceChecker, Exchange
from crmflow.sandbox.specs.discovery import (
    DiscoveryDocument,
    bundled_document,
    bundled_text,
)
from tests.sandbox.conftest import GoogleSandbox


@pytest.mark.parametrize(
    ("name", "version"), [("calendar", "v3"), ("gmail", "v1"), ("oauth2", "v2")]
)
def test_bundled_documents_equal_the_installed_client(name, version):
    installed = get_static_doc(name, version)
    assert installed is not None
    assert (
        hashlib.sha256(bundled_text(name).encode()).hexdigest()
        == hashlib.sha256(installed.encode()).hexdigest()
    )


def test_bundled_revisions_are_the_referenced_ones():
    assert bundled_document("calendar").revision == "20261030"
    assert bundled_document("gmail").revision == "20261005"


@pytest.fixture
def checker(installed_discovery: dict[str, DiscoveryDocument]) -> ConformanceChecker:
    return ConformanceChecker(installed_discovery)


def _ex(
    method,
    path,
    status,
    body,
    *,
    query="",
    request=b"",
    content_type="application/json; charset=UTF-8",
):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Exchange(
        method=method,
        path=path,
        query=query,
        request_headers={},
        request_body=request,
        status=status,
        response_headers={"content-type": content_type},
        response_body=data,
    )


EVENT = {
    "kind": "calendar#event",
    "etag": '"1"',
    "id": "abcde",
    "status": "confirmed",
    "start": {"dateTime": "2024-01-01T09:00:00Z"},
    "end": {"dateTime": "2024-01-01T10:00:00Z"},
    "sequence": 0,
}
GET_EVENT = "/google/calendar/v3/calendars/primary/events/abcde"


def test_checker_accepts_a_conforming_exchange(checker):
    assert checker.check(_ex("GET", GET_EVENT, 200, EVENT)) == []


@pytest.mark.parametrize(
    ("exchange", "needle"),
    [
        (
            _ex("GET", GET_EVENT, 200, {**EVENT, "colour": "red"}),
            "unknown property 'colour'",
        ),
        (_ex("GET", GET_EVENT, 200, {**EVENT, "sequence": "0"}), "expected integer"),
        (_ex("GET", GET_EVENT, 200, {**EVENT, "updated": "yesterday"}), "RFC 3339"),
        (
            _ex(
                "GET",
                GET_EVENT,
                200,
                {**EVENT, "start": {"dateTime": "2024-01-01T09:00:00"}},
            ),
            "RFC 3339",
        ),
        (
            _ex("GET", GET_EVENT, 200, EVENT, query="maxAttendees=abc"),
            "accepted an invalid request",
        ),
        (
            _ex("GET", GET_EVENT, 200, EVENT, query="bogus=1"),
            "accepted an invalid request",
        ),
        (
            _ex(
                "GET",
                "/google/calendar/v3/calendars/primary/events",
                200,
                {"items": []},
                query="orderBy=random",
            ),
            "enum",
        ),
        (
            _ex(
                "POST",
                "/google/calendar/v3/calendars/primary/events",
                200,
                EVENT,
                request=b'{"summary": "no start"}',
            ),
            "required",
        ),
        (
            _ex(
                "GET", GET_EVENT, 404, {"error": {"code": 404, "message": "Not Found"}}
            ),
            "errors missing",
        ),
        (
            _ex(
                "GET",
                GET_EVENT,
                404,
                {
                    "error": {
                        "code": 400,
                        "message": "x",
                        "errors": [{"domain": "g", "reason": "r", "message": "m"}],
                    }
                },
            ),
            "!= HTTP status",
        ),
        (_ex("GET", GET_EVENT, 404, b"<html>not found</html>"), "not JSON"),
        (_ex("GET", "/google/calendar/v3/nowhere", 200, {}), "does not define"),
        (_ex("DELETE", GET_EVENT, 204, {"kind": "x"}), "declares no response body"),
        (_ex("GET", GET_EVENT, 200, EVENT, content_type="text/plain"), "content type"),
        (
            _ex(
                "GET",
                "/google/gmail/v1/users/me/profile",
                200,
                {"emailAddress": "a@b", "historyId": 12},
            ),
            "expected string",
        ),
        (
            _ex(
                "POST",
                "/google/token",
                200,
                {
                    "access_token": "a",
                    "expires_in": 3599,
                    "scope": "s",
                    "token_type": "Bearer",
                    "extra": 1,
                },
            ),
            "unknown token field",
        ),
        (
            _ex("POST", "/google/token", 400, {"error_description": "x"}),
            "lacks 'error'",
        ),
    ],
)
def test_checker_reports_violations(checker, exchange, needle):
    problems = checker.check(exchange)
    assert any(needle in p for p in problems), problems


def test_checker_accepts_rejected_invalid_requests(checker):
    rejected = _ex(
        "GET",
        GET_EVENT,
        400,
        {
            "error": {
                "code": 400,
                "message": "Invalid value",
                "errors": [
                    {
                        "domain": "global",
                        "reason": "invalid",
                        "message": "Invalid value",
                    }
                ],
            }
        },
        query="maxAttendees=abc",
    )
    assert checker.check(rejected) == []


def test_suite_records_every_exchange(google: GoogleSandbox, google_sandbox_server):
    api = google.api(google.access("ada@example.com"))
    api.get("calendar/v3/calendars/primary/events")
    recorded = list(google_sandbox_server.recorder.exchanges)
    paths = [ex.path for ex in recorded]
    assert "/google/_sandbox/tokens" in paths
    assert "/google/calendar/v3/calendars/primary/events" in paths


def test_checker_checks_each_batch_part(checker):
    request = (
        b"--b\r\nContent-Type: application/http\r\nContent-ID: <1>\r\n\r\n"
        b"GET /google/calendar/v3/calendars/primary/events/abcde HTTP/1.1\r\n\r\n--b--\r\n"
    )
    part = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"kind": "calendar#event", "bogus": 1}'
    response = (
        b"--r\r\nContent-Type: application/http\r\nContent-ID: <response-1>\r\n\r\n"
        + part
        + b"\r\n--r--\r\n"
    )
    exchange = Exchange(
        method="POST",
        path="/google/batch/calendar/v3",
        query="",
        request_headers={"content-type": "multipart/mixed; boundary=b"},
        request_body=request,
        status=200,
        response_headers={"content-type": "multipart/mixed; boundary=r"},
        response_body=response,
    )
    problems = checker.check(exchange)
    assert any(
        "(batch part)" in p and "unknown property 'bogus'" in p for p in problems
    ), problems
