"""The vendor-neutral half of the control API (``{base}/_sandbox/...``).

Tests and the demo drive the sandbox through these JSON endpoints; each vendor
mount adds its own (see :mod:`crmflow.sandbox.google.control`). No
authentication: the sandbox is a local test double.

=======================  ======  ==================================================
path                     method  effect
=======================  ======  ==================================================
``/_sandbox/``           GET     index of endpoints
``/_sandbox/users``      GET     list users
``/_sandbox/users``      POST    ``{"email", "name"?}`` -> the user (idempotent)
``/_sandbox/requests``   GET     request log; ``?since=<seq>&include_control=true``
``/_sandbox/requests``   DELETE  clear the request log
``/_sandbox/faults``     GET     active faults
``/_sandbox/faults``     POST    a :class:`~crmflow.sandbox.faults.Fault` -> it, with id
``/_sandbox/faults``     DELETE  remove every fault
``/_sandbox/faults/ID``  DELETE  remove one fault
``/_sandbox/clock``      GET     ``{"now", "offset_s"}``
``/_sandbox/clock``      POST    ``{"advance_s"}`` moves sandbox time forward
``/_sandbox/config``     GET     behaviour switches (:class:`SandboxConfig`)
``/_sandbox/config``     PATCH   change switches
``/_sandbox/reset``      POST    forget all users, data, faults, log
``/_sandbox/flush``      POST    write the SQLite file now (if persistence is on)
=======================  ======  ==================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crmflow.sandbox._http import ControlError, json_response, read_json_object
from crmflow.sandbox.faults import Fault
from crmflow.sandbox.requestlog import annotate
from crmflow.sandbox.state import SandboxConfig, SandboxState, SandboxUser

__all__ = ["control_endpoint", "control_routes", "user_json"]

Endpoint = Callable[[Request], Awaitable[Response]]

_FAULT = TypeAdapter(Fault)
_CONFIG = TypeAdapter(SandboxConfig)


def control_endpoint(fn: Endpoint) -> Endpoint:
    """Wrap a control endpoint: ControlError and validation errors become JSON 4xx."""

    async def wrapped(request: Request) -> Response:
        annotate(request.scope).api_method = "sandbox." + fn.__name__
        try:
            return await fn(request)
        except ControlError as exc:
            return exc.response()
        except ValidationError as exc:
            return json_response(
                {"error": exc.errors(include_url=False, include_context=False)}, 400
            )
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)

    wrapped.__name__ = fn.__name__
    return wrapped


def user_json(user: SandboxUser) -> dict[str, Any]:
    """The control API's form of a user."""
    return dataclasses.asdict(user)


def control_routes(state: SandboxState) -> list[BaseRoute]:
    """Routes relative to the ``/_sandbox`` mount."""

    @control_endpoint
    async def index(request: Request) -> Response:
        return json_response(
            {
                "endpoints": [
                    "GET/POST users",
                    "GET/DELETE requests",
                    "GET/POST/DELETE faults",
                    "DELETE faults/{id}",
                    "GET/POST clock",
                    "GET/PATCH config",
                    "POST reset",
                    "POST flush",
                ]
            }
        )

    @control_endpoint
    async def users(request: Request) -> Response:
        if request.method == "GET":
            with state.lock:
                return json_response(
                    {"users": [user_json(u) for u in state.users.values()]}
                )
        body = await read_json_object(request)
        email = body.get("email")
        if not isinstance(email, str):
            raise ControlError(400, "email is required")
        name = body.get("name")
        user = state.add_user(email, name if isinstance(name, str) else None)
        return json_response(user_json(user), status=201)

    @control_endpoint
    async def requests(request: Request) -> Response:
        if request.method == "DELETE":
            state.requests.clear()
            return Response(status_code=204)
        since = int(request.query_params.get("since", "0") or 0)
        include = request.query_params.get("include_control") == "true"
        entries = state.requests.entries(since=since, include_control=include)
        return json_response(
            {
                "requests": [e.as_json() for e in entries],
                "lastSeq": state.requests.last_seq,
            }
        )

    @control_endpoint
    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return json_response(
                {
                    "faults": [
                        _FAULT.dump_python(f, mode="json")
                        for f in state.faults.active()
                    ]
                }
            )
        if request.method == "DELETE":
            state.faults.clear()
            return Response(status_code=204)
        fault = _FAULT.validate_python(await read_json_object(request))
        state.faults.add(fault)
        return json_response(_FAULT.dump_python(fault, mode="json"), status=201)

    @control_endpoint
    async def fault_item(request: Request) -> Response:
        if not state.faults.remove(request.path_params["fault_id"]):
            raise ControlError(404, "no such fault")
        return Response(status_code=204)

    @control_endpoint
    async def clock(request: Request) -> Response:
        if request.method == "POST":
            body = await read_json_object(request)
            advance = body.get("advance_s")
            if not isinstance(advance, int | float):
                raise ControlError(400, "advance_s (seconds) is required")
            state.clock.advance(float(advance))
            state.mark_dirty()
        return json_response(
            {"now": state.clock.now().isoformat(), "offset_s": state.clock.offset_s}
        )

    @control_endpoint
    async def config(request: Request) -> Response:
        if request.method == "PATCH":
            body = await read_json_object(request)
            with state.lock:
                merged = {**_CONFIG.dump_python(state.config), **body}
                state.config = _CONFIG.validate_python(merged)
                state.mark_dirty()
        return json_response(_CONFIG.dump_python(state.config, mode="json"))

    @control_endpoint
    async def reset(request: Request) -> Response:
        state.reset()
        return Response(status_code=204)

    @control_endpoint
    async def flush(request: Request) -> Response:
        state.mark_dirty()
        state.flush()
        return Response(status_code=204)

    return [
        Route("/", index, methods=["GET"]),
        Route("/users", users, methods=["GET", "POST"]),
        Route("/requests", requests, methods=["GET", "DELETE"]),
        Route("/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/faults/{fault_id}", fault_item, methods=["DELETE"]),
        Route("/clock", clock, methods=["GET", "POST"]),
        Route("/config", config, methods=["GET", "PATCH"]),
        Route("/reset", reset, methods=["POST"]),
        Route("/flush", flush, methods=["POST"]),
    ]
