"""Versions as HTTP ETags: ``ETag: "<version>"``; writes honour ``If-Match``."""

from __future__ import annotations

from fastapi import Response

from crmflow.errors import ValidationFailed


def set_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = f'"{version}"'


def expected_version(if_match: str | None) -> int | None:
    """The version an ``If-Match`` header asks for (None when absent or ``*``).

    Raises:
        ValidationFailed: the header is not an ETag this API issued.
    """
    if if_match is None or if_match.strip() == "*":
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise ValidationFailed(
            'If-Match must be an ETag returned by this API, e.g. "3".'
        )
    return int(value)
