"""The msgraph-sdk route and field oracle (data from scripts/extract_graph_oracle.py).

* Routes: a sandbox path after ``/v1.0`` (``/me/…`` is ``/users/{user-id}/…``,
  as msgraph-sdk rewrites it) must match one v1.0 URL template segment by
  segment, and the template must define the HTTP method.
* Fields: a JSON body is walked with the SDK model the route returns (errors:
  ``ODataError``); every key must be a field of the model or one of its
  bases, of the subclass named by ``@odata.type``, or an OData annotation
  (``@odata.context``, ``@odata.etag``, ``@odata.type``; ``@removed`` only on
  delta items). ``innerError`` is open: Graph documents extra members
  (throttling's ``code``/``message``/``status``), and the SDK's InnerError is
  an ``AdditionalDataHolder``.
* Documented routes missing from the SDK are listed in :data:`DOCUMENTED_ONLY`
  with their source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: v1.0 routes in the Graph docs that msgraph-sdk 1.65 has no builder for
DOCUMENTED_ONLY = {
    # attachment-get.md: "GET /me/messages/{id}/attachments/{id}/$value" (raw contents)
    (
        "/users/{user-id}/messages/{message-id}/attachments/{attachment-id}/$value",
        "GET",
    ): None,
}
_ANNOTATIONS = {"@odata.context", "@odata.etag", "@odata.type"}
_OPEN_MODELS = {"InnerError"}


@dataclass
class Oracle:
    routes: list[dict[str, Any]]
    models: dict[str, Any]
    enums: dict[str, list[str]]

    @classmethod
    def load(cls, path: Path) -> Oracle:
        data = json.loads(path.read_text(encoding="utf-8"))
        routes = list(data["routes"])
        for (template, method), returns in DOCUMENTED_ONLY.items():
            routes.append({"template": template, "methods": {method: returns}})
        return cls(routes, data["models"], data["enums"])

    # -- routes -------------------------------------------------------------------------

    @staticmethod
    def _segments(path: str) -> list[str]:
        parts = [p for p in path.split("?")[0].split("/") if p]
        if parts and parts[0].casefold() == "me":
            parts = ["users", "{user-id}", *parts[1:]]
        return parts

    def match(self, path: str) -> dict[str, Any] | None:
        """The oracle route matching a concrete path (or a sandbox template)."""
        segs = self._segments(path)
        for route in self.routes:
            tmpl = [p for p in route["template"].split("/") if p]
            if len(tmpl) != len(segs):
                continue
            ok = True
            for t, s in zip(tmpl, segs, strict=True):
                if t.startswith("{"):
                    continue
                if s.startswith("{") and not t.startswith("{"):
                    ok = False
                    break
                tl, sl = t.casefold(), s.casefold()
                if tl != sl and tl != sl + "()" and tl + "()" != sl:
                    ok = False
                    break
            if ok:
                return route
        return None

    def route_problem(self, method: str, path: str) -> str | None:
        """None when ``method path`` exists in v1.0, else a message."""
        route = self.match(path)
        if route is None:
            return f"route {method} {path}: no msgraph-sdk v1.0 URL template"
        if method not in route["methods"]:
            return (
                f"route {method} {path}: template {route['template']} has no {method}"
            )
        return None

    # -- fields -----------------------------------------------------------------------------

    def _fields(self, model: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        todo = [model]
        while todo:
            name = todo.pop()
            spec = self.models.get(name)
            if spec is None:
                continue
            for key, value in spec["fields"].items():
                out.setdefault(key, value)
            todo.extend(spec["bases"])
        return out

    def _derived(self, model: str, odata_type: str) -> str | None:
        todo = [model]
        while todo:
            name = todo.pop()
            spec = self.models.get(name)
            if spec is None:
                continue
            for key, target in spec.get("derived", {}).items():
                if key.casefold() == odata_type.casefold():
                    return str(target)
            todo.extend(spec["bases"])
        return None

    def check_model(
        self, value: Any, model: str, where: str, *, delta: bool = False
    ) -> list[str]:
        """Problems of ``value`` against ``model`` (recursively)."""
        if model in _OPEN_MODELS or model in {"any", "map"}:
            return []
        if isinstance(value, list):
            return [
                p
                for item in value
                for p in self.check_model(item, model, where, delta=delta)
            ]
        if not isinstance(value, dict):
            return []
        odata_type = value.get("@odata.type")
        if isinstance(odata_type, str) and odata_type.startswith("#microsoft.graph."):
            model = self._derived(model, odata_type) or model
        fields = self._fields(model)
        problems: list[str] = []
        if not fields and model not in self.models:
            return [f"{where}: model {model} unknown to the oracle"]
        for key, item in value.items():
            if key in _ANNOTATIONS or (delta and key == "@removed"):
                continue
            spec = fields.get(key)
            if spec is None:
                problems.append(f"{where}: field {key!r} is not in {model}")
                continue
            kind = str(spec["type"])
            if kind.startswith("object:") and item is not None:
                problems.extend(
                    self.check_model(
                        item, kind.split(":", 1)[1], f"{where}.{key}", delta=delta
                    )
                )
            elif kind.startswith("enum:") and item is not None:
                values = self.enums.get(kind.split(":", 1)[1])
                items = item if isinstance(item, list) else [item]
                if values is not None:
                    for v in items:
                        if v not in values:
                            problems.append(
                                f"{where}.{key}: {v!r} is not a {kind} member"
                            )
        return problems

    def check_response(
        self, method: str, path: str, status: int, content_type: str, body: bytes
    ) -> list[str]:
        """Check one Graph response captured by the recorder."""
        problems: list[str] = []
        data: Any = None
        if body and "json" in content_type:
            try:
                data = json.loads(body)
            except ValueError:
                return [f"{method} {path}: invalid JSON"]
        error_code = (
            data.get("error", {}).get("code")
            if isinstance(data, dict) and isinstance(data.get("error"), dict)
            else None
        )
        unknown_path = (
            status in {400, 405}
            and error_code in {"BadRequest", "Request_BadRequest"}
            and ("Resource not found for the segment" in str(data) or status == 405)
        )
        route = None
        if not unknown_path and path.strip("/").casefold() != "$batch":
            problem = self.route_problem(method, path)
            if problem:
                problems.append(problem)
            route = self.match(path)
        if data is None:
            return problems
        where = f"{method} {path} [{status}]"
        if status >= 400:
            return problems + self.check_model(data, "ODataError", where)
        if path.strip("/").casefold() == "$batch":
            return problems + self.check_model(data, "BatchResponseContent", where)
        if route is None:
            return problems
        model = route["methods"].get(method)
        if model is None:
            return [*problems, f"{where}: the SDK declares no response body"]
        return problems + self.check_model(
            data, model, where, delta="delta" in path.casefold()
        )
