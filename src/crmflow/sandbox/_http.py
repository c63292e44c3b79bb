"""Small HTTP helpers shared by the sandbox's vendor and control routes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["ControlError", "dumps", "json_response", "read_json_object"]


class ControlError(Exception):
    """A control-API request was wrong; answered as ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        """Return the JSON error response."""
        return json_response({"error": self.message}, status=self.status)


def dumps(data: Any) -> bytes:
    """Serialise ``data`` as compact UTF-8 JSON."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(
    data: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Return ``data`` as ``application/json; charset=UTF-8`` (Google's content type)."""
    return Response(
        dumps(data),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json; charset=UTF-8",
    )


async def read_json_object(
    request: Request, *, required: bool = True
) -> dict[str, Any]:
    """Parse the request body as a JSON object.

    Raises:
        ControlError: 400 when the body is not a JSON object (or empty while
            ``required``).
    """
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ControlError(400, "a JSON object body is required")
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ControlError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ControlError(400, "body must be a JSON object")
    return data
