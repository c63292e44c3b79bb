"""The msgraph-sdk oracle itself: every sandbox route is a v1.0 template, and the checker catches violations.

The suite-wide per-response check lives in conftest (``graph_oracle``).
"""

from __future__ import annotations

import json

from crmflow.sandbox.microsoft.app import GRAPH_ROUTES
from tests.sandbox.microsoft.oracle import Oracle


def test_every_sandbox_route_exists_in_graph_v1(oracle: Oracle) -> None:
    problems = [
        oracle.route_problem(route.method, route.template) for route in GRAPH_ROUTES
    ]
    assert [p for p in problems if p] == []
    assert oracle.route_problem("POST", "/$batch") is None


def test_oracle_rejects_unknown_routes_methods_and_fields(oracle: Oracle) -> None:
    assert oracle.route_problem("GET", "/me/eventz") is not None
    assert oracle.route_problem("PUT", "/me/events/{event-id}") is not None
    body = json.dumps(
        {
            "value": [
                {
                    "id": "x",
                    "subject": "s",
                    "subjekt": "typo",
                    "start": {"dateTime": "d", "timeZone": "UTC", "tz": 1},
                }
            ]
        }
    ).encode()
    problems = oracle.check_response("GET", "/me/events", 200, "application/json", body)
    assert any("'subjekt'" in p for p in problems)
    assert any("'tz'" in p for p in problems)
    bad_enum = json.dumps({"id": "x", "type": "weird"}).encode()
    assert oracle.check_response(
        "GET", "/me/events/abc", 200, "application/json", bad_enum
    )
    error = json.dumps(
        {
            "error": {
                "code": "X",
                "message": "m",
                "innerError": {"date": "d"},
                "extra": 1,
            }
        }
    ).encode()
    assert any(
        "'extra'" in p
        for p in oracle.check_response("GET", "/me", 404, "application/json", error)
    )


def test_oracle_follows_odata_type_to_subclasses(oracle: Oracle) -> None:
    attachment = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": "a",
        "name": "n",
        "contentBytes": "QQ==",
    }
    assert oracle.check_model(attachment, "Attachment", "t") == []
    assert (
        oracle.check_model({"id": "a", "contentBytes": "QQ=="}, "Attachment", "t") != []
    )
