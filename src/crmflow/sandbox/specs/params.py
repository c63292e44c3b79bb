"""Query-parameter parsing and validation against a discovery method.

:func:`parse_query` turns raw query pairs into typed values (``integer`` ->
``int``, ``boolean`` -> ``bool``, ``repeated`` -> ``list``) and reports every
problem — unknown name, bad type, value outside ``minimum``/``maximum``, value
not in ``enum``, a non-repeated name given twice, a missing required parameter.
The sandbox answers problems with 400 (Google rejects them too, see
google-apis.md §7.2); the test-suite conformance check uses the same function
to catch a sandbox that accepted something the discovery document forbids.

Types per the discovery format: ``int64``/``uint64`` values are JSON strings in
discovery and stay ``str`` here (digits checked); ``date-time`` stays ``str``
(handlers parse it, because Google's rules differ per parameter).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from crmflow.sandbox.specs.discovery import ApiMethod, Parameter

__all__ = ["ParameterProblem", "ProblemKind", "coerce", "parse_query"]

_INT_RANGES: dict[str | None, tuple[int, int]] = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    None: (-(2**63), 2**63 - 1),
}


class ProblemKind(StrEnum):
    """Why a parameter was rejected."""

    UNKNOWN = "unknown"
    INVALID = "invalid"
    RANGE = "range"
    ENUM = "enum"
    REPEATED = "repeated"
    REQUIRED = "required"


@dataclass(frozen=True)
class ParameterProblem:
    """One rejected parameter."""

    kind: ProblemKind
    name: str
    value: str | None
    parameter: Parameter | None

    def describe(self) -> str:
        """Return a human-readable sentence (used by the conformance check)."""
        return f"parameter {self.name}={self.value!r}: {self.kind.value}"


def coerce(param: Parameter, raw: str) -> tuple[Any, ProblemKind | None]:
    """Convert one raw value; return (value, None) or (None, problem kind)."""
    if param.type == "boolean":
        lowered = raw.lower()
        if lowered not in ("true", "false"):
            return None, ProblemKind.INVALID
        return lowered == "true", None
    if param.type == "integer":
        try:
            number = int(raw)
        except ValueError:
            return None, ProblemKind.INVALID
        low, high = _INT_RANGES.get(param.format, _INT_RANGES[None])
        if not low <= number <= high:
            return None, ProblemKind.INVALID
        if param.minimum is not None and number < param.minimum:
            return None, ProblemKind.RANGE
        if param.maximum is not None and number > param.maximum:
            return None, ProblemKind.RANGE
        return number, None
    if param.type == "number":
        try:
            return float(raw), None
        except ValueError:
            return None, ProblemKind.INVALID
    if param.format in ("int64", "uint64") and not (
        raw.isdigit()
        or (param.format == "int64" and raw[:1] == "-" and raw[1:].isdigit())
    ):
        return None, ProblemKind.INVALID
    if param.enum is not None and raw not in param.enum:
        return None, ProblemKind.ENUM
    return raw, None


def parse_query(
    method: ApiMethod,
    global_parameters: Mapping[str, Parameter],
    pairs: Iterable[tuple[str, str]],
) -> tuple[dict[str, Any], list[ParameterProblem]]:
    """Parse query ``pairs`` for ``method``.

    Returns:
        (values, problems): typed values by parameter name (repeated parameters
        as lists) and every problem found. Values with problems are left out.
    """
    known = method.query_parameters()
    values: dict[str, Any] = {}
    problems: list[ParameterProblem] = []
    for name, raw in pairs:
        param = known.get(name) or global_parameters.get(name)
        if param is None:
            problems.append(ParameterProblem(ProblemKind.UNKNOWN, name, raw, None))
            continue
        value, problem = coerce(param, raw)
        if problem is not None:
            problems.append(ParameterProblem(problem, name, raw, param))
            continue
        if param.repeated:
            values.setdefault(name, []).append(value)
        elif name in values:
            problems.append(ParameterProblem(ProblemKind.REPEATED, name, raw, param))
        else:
            values[name] = value
    for name, param in known.items():
        if param.required and name not in values:
            problems.append(ParameterProblem(ProblemKind.REQUIRED, name, None, param))
    return values, problems
