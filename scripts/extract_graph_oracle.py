"""Extract the Microsoft Graph route and field oracle from the ``msgraph-sdk`` wheel.

The Kiota-generated ``msgraph-sdk`` package (built from the v1.0 OpenAPI/CSDL)
carries, for every endpoint, a request builder with a ``url_template`` and typed
``get``/``post``/``patch``/``put``/``delete`` methods, and for every resource a
model whose ``get_field_deserializers`` lists the exact JSON keys
(microsoft-graph.md §8). Importing the SDK in tests would cost seconds and
205 MB, so this script reads the sources with :mod:`ast` (nothing is imported)
and writes a compact JSON oracle to
``tests/sandbox/microsoft/data/graph_oracle.json``:

* ``routes``: ``{"template": "/users/{user-id}/events/{event-id}", "methods":
  {"GET": "Event", "PATCH": "Event", "DELETE": null}, "required_query": [...],
  "optional_query": [...]}`` for the subtrees the sandbox emulates (the user's
  calendar, events, mail and the ``/subscriptions`` collection), plus
  ``/$batch`` from ``msgraph-core``.
* ``models``: for every model reachable from those routes, its JSON keys with
  their kind (``str``, ``bool``, ``int``, ``datetime``, ``enum:<Name>``,
  ``object:<Name>``; ``list`` flag for collections), the base class, and the
  ``@odata.type`` discriminator values of its subclasses.
* ``enums``: member values of every enum those models use.

Usage (needs ``msgraph-sdk`` installed in the interpreter's site-packages)::

    .venv/bin/python scripts/extract_graph_oracle.py [--output PATH]
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

#: request-builder subtrees under users/item kept in the oracle
USER_SUBTREES = (
    "calendar",
    "calendar_view",
    "calendars",
    "events",
    "mail_folders",
    "messages",
    "send_mail",
)

#: models whose navigation properties are not followed: ``user`` reaches most of
#: Graph, but the sandbox only emits its scalar properties (``GET /me``).
SHALLOW = frozenset({"User", "DirectoryObject"})

#: bases whose ``@odata.type`` subclasses are kept (``entity`` maps to all of
#: Graph; the sandbox only emits attachment subtypes)
POLYMORPHIC = frozenset({"Attachment", "AttachmentBase", "Extension"})

_PRIMITIVES = {
    "get_str_value": "str",
    "get_bool_value": "bool",
    "get_int_value": "int",
    "get_float_value": "float",
    "get_datetime_value": "datetime",
    "get_date_value": "date",
    "get_time_value": "time",
    "get_timedelta_value": "duration",
    "get_bytes_value": "bytes",
    "get_uuid_value": "uuid",
}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise SystemExit(f"{name} is not installed; pip install msgraph-sdk")
    return Path(next(iter(spec.submodule_search_locations)))


def _template_of(tree: ast.Module) -> str | None:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "__init__"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and node.args[1].value.startswith("{+baseurl}")
        ):
            return node.args[1].value
    return None


def _return_type(annotation: ast.expr | None) -> str | None:
    """``Optional[EventCollectionResponse]`` -> ``EventCollectionResponse``; None -> None."""
    if annotation is None:
        return None
    text = ast.unparse(annotation)
    if text == "None":
        return None
    match = re.fullmatch(r"Optional\[(\w+)\]", text)
    return match.group(1) if match else text


def _methods_of(
    tree: ast.Module, file: Path, generated: Path, local: dict[str, Path]
) -> dict[str, str | None]:
    """Return ``{HTTP method: response model key}``.

    Response classes such as ``DeltaGetResponse`` exist once per endpoint folder,
    so a class defined outside ``models/`` is keyed ``Name@folder`` and recorded
    in ``local`` for :func:`extract_models`.
    """
    imports: dict[str, Path] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0 and node.module:
            base = file.parent
            for _ in range(node.level - 1):
                base = base.parent
            target = base.joinpath(*node.module.split(".")).with_suffix(".py")
            for alias in node.names:
                imports[alias.name] = target
    methods: dict[str, str | None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncFunctionDef) and node.name in {
            "get",
            "post",
            "patch",
            "put",
            "delete",
        }:
            name = _return_type(node.returns)
            where = imports.get(name or "")
            if name and where is not None and where.parent != generated / "models":
                key = f"{name}@{where.parent.relative_to(generated).as_posix()}"
                local[key] = where
                name = key
            methods[node.name.upper()] = name
    return methods


def split_template(template: str) -> tuple[str, list[str], list[str]]:
    """Return (path, required query names, optional query names) of a URL template."""
    body = template.removeprefix("{+baseurl}")
    optional: list[str] = []
    match = re.search(r"\{[?&]([^}]*)\}$", body)
    if match:
        optional = [p.replace("%24", "$") for p in match.group(1).split(",")]
        body = body[: match.start()]
    required: list[str] = []
    if "?" in body:
        body, query = body.split("?", 1)
        required = [part.split("=", 1)[0] for part in query.split("&") if part]
    path = re.sub(r"%2D", "-", body)
    return path, required, optional


def extract_routes(generated: Path, local: dict[str, Path]) -> list[dict[str, Any]]:
    """Collect the request builders of the emulated subtrees."""
    roots = [generated / "users" / "item" / sub for sub in USER_SUBTREES]
    roots.append(generated / "subscriptions")
    files = [generated / "users" / "item" / "user_item_request_builder.py"]
    for root in roots:
        files.extend(sorted(root.rglob("*_request_builder.py")))
    routes: dict[str, dict[str, Any]] = {}
    for file in files:
        tree = ast.parse(file.read_text(encoding="utf-8"))
        template = _template_of(tree)
        if template is None:
            continue
        path, required, optional = split_template(template)
        entry = routes.setdefault(
            path,
            {
                "template": path,
                "methods": {},
                "required_query": required,
                "optional_query": optional,
            },
        )
        entry["methods"].update(_methods_of(tree, file, generated, local))
    return sorted(routes.values(), key=lambda r: str(r["template"]))


def _class_def(tree: ast.Module) -> ast.ClassDef | None:
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            return node
    return None


def _parse_model(file: Path) -> dict[str, Any]:
    tree = ast.parse(file.read_text(encoding="utf-8"))
    cls = _class_def(tree)
    if cls is None:
        raise ValueError(f"no class in {file}")
    bases = [
        ast.unparse(b)
        for b in cls.bases
        if ast.unparse(b) not in {"Parsable", "AdditionalDataHolder", "BackedModel"}
    ]
    if any(b in {"str, Enum", "Enum"} for b in bases) or (bases == ["str", "Enum"]):
        values = []
        for stmt in cls.body:
            if isinstance(stmt, ast.Assign):
                value = stmt.value
                if isinstance(value, ast.Tuple) and value.elts:
                    value = value.elts[0]
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    values.append(value.value)
        return {"kind": "enum", "name": cls.name, "values": values}
    fields: dict[str, dict[str, Any]] = {}
    derived: dict[str, str] = {}
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef) and node.name == "get_field_deserializers":
            for sub in ast.walk(node):
                if isinstance(sub, ast.Dict):
                    for key, value in zip(sub.keys, sub.values, strict=True):
                        if isinstance(key, ast.Constant) and isinstance(
                            value, ast.Lambda
                        ):
                            fields[str(key.value)] = _field_kind(value)
        if (
            isinstance(node, ast.FunctionDef)
            and node.name == "create_from_discriminator_value"
        ):
            text = ast.unparse(node)
            for odata, target in re.findall(
                r"'(#microsoft\.graph\.[A-Za-z0-9.]+)'\.casefold\(\):\s*from \.[\w.]+ import (\w+)",
                text,
            ):
                derived[odata] = target
    return {
        "kind": "model",
        "name": cls.name,
        "bases": [b for b in bases if b not in {"str", "Enum"}],
        "fields": fields,
        "derived": derived,
    }


def _field_kind(lam: ast.Lambda) -> dict[str, Any]:
    call = lam.body
    # the lambdas read: setattr(self, <name>, n.get_<kind>_value(<Type>))
    if isinstance(call, ast.Call) and call.args and isinstance(call.args[-1], ast.Call):
        inner = call.args[-1]
        if isinstance(inner.func, ast.Attribute):
            getter = inner.func.attr
            arg = ast.unparse(inner.args[0]) if inner.args else None
            if getter in _PRIMITIVES:
                return {"type": _PRIMITIVES[getter], "list": False}
            if getter == "get_object_value":
                return {"type": f"object:{arg}", "list": False}
            if getter == "get_collection_of_object_values":
                return {"type": f"object:{arg}", "list": True}
            if getter == "get_enum_value":
                return {"type": f"enum:{arg}", "list": False}
            if getter == "get_collection_of_enum_values":
                return {"type": f"enum:{arg}", "list": True}
            if getter == "get_collection_of_primitive_values":
                return {"type": arg or "str", "list": True}
            return {"type": getter, "list": False}
    return {"type": "unknown", "list": False}


def _module_index(root: Path) -> dict[str, Path]:
    """Map class names to their files (model files define one class each)."""
    index: dict[str, Path] = {}
    for file in root.rglob("*.py"):
        if file.name.endswith("_request_builder.py") or file.name == "__init__.py":
            continue
        text = file.read_text(encoding="utf-8")
        for match in re.finditer(r"^class (\w+)\(", text, re.MULTILINE):
            index.setdefault(match.group(1), file)
    return index


def extract_models(
    generated: Path, roots: set[str], local: dict[str, Path]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Parse every model reachable from ``roots`` (class names or ``local`` keys)."""
    index = _module_index(generated / "models")
    index.update(local)
    models: dict[str, Any] = {}
    enums: dict[str, list[str]] = {}
    todo = sorted(roots)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in index:
            continue
        seen.add(name)
        parsed = _parse_model(index[name])
        if parsed["kind"] == "enum":
            enums[name] = parsed["values"]
            continue
        derived = parsed["derived"] if name in POLYMORPHIC else {}
        models[name] = {
            "bases": parsed["bases"],
            "fields": parsed["fields"],
            "derived": derived,
        }
        todo.extend(parsed["bases"])
        todo.extend(derived.values())
        if name in SHALLOW:
            continue
        for spec in parsed["fields"].values():
            kind = str(spec["type"])
            if ":" in kind:
                todo.append(kind.split(":", 1)[1])
    return dict(sorted(models.items())), dict(sorted(enums.items()))


def main(argv: list[str] | None = None) -> int:
    """Write the oracle JSON; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent.parent
        / "tests/sandbox/microsoft/data/graph_oracle.json",
    )
    args = parser.parse_args(argv)
    generated = _package_dir("msgraph") / "generated"
    local: dict[str, Path] = {}
    routes = extract_routes(generated, local)
    # JSON batching lives in msgraph-core (BatchRequestBuilder posts to
    # "{+baseurl}/$batch"; MAX_REQUESTS = 20).
    routes.append(
        {
            "template": "/$batch",
            "methods": {"POST": "BatchResponseContent"},
            "required_query": [],
            "optional_query": [],
        }
    )
    roots = {t for r in routes for t in r["methods"].values() if t}
    roots |= {"ODataError", "UploadSession", "Message"}
    models, enums = extract_models(generated, roots, local)
    # Not an SDK enum: lifecycle notification kinds from
    # change-notifications-lifecycle-events.md (microsoft-graph.md §5.5).
    enums["LifecycleEventType"] = [
        "reauthorizationRequired",
        "subscriptionRemoved",
        "missed",
    ]
    # $batch items (msgraph_core.requests.batch_response_item): id, status,
    # headers, body; the collection carries "responses".
    models["BatchResponseContent"] = {
        "bases": [],
        "fields": {"responses": {"type": "object:BatchResponseItem", "list": True}},
        "derived": {},
    }
    models["BatchResponseItem"] = {
        "bases": [],
        "fields": {
            "id": {"type": "str", "list": False},
            "status": {"type": "int", "list": False},
            "headers": {"type": "map", "list": False},
            "body": {"type": "any", "list": False},
        },
        "derived": {},
    }
    # Change notifications are not SDK models (they are POSTed to the app); their
    # keys come from the changeNotificationCollection / changeNotification /
    # resourceData resources in the v1.0 docs (microsoft-graph.md §5.4, §5.5).
    models["ChangeNotificationCollection"] = {
        "bases": [],
        "fields": {
            "value": {"type": "object:ChangeNotification", "list": True},
            "validationTokens": {"type": "str", "list": True},
        },
        "derived": {},
    }
    models["ChangeNotification"] = {
        "bases": [],
        "fields": {
            name: {"type": kind, "list": False}
            for name, kind in {
                "id": "str",
                "subscriptionId": "str",
                "subscriptionExpirationDateTime": "datetime",
                "clientState": "str",
                "changeType": "str",
                "resource": "str",
                "resourceData": "object:ResourceData",
                "tenantId": "str",
                "lifecycleEvent": "enum:LifecycleEventType",
                "encryptedContent": "any",
            }.items()
        },
        "derived": {},
    }
    models["ResourceData"] = {
        "bases": [],
        "fields": {
            "@odata.type": {"type": "str", "list": False},
            "@odata.id": {"type": "str", "list": False},
            "@odata.etag": {"type": "str", "list": False},
            "id": {"type": "str", "list": False},
        },
        "derived": {},
    }
    oracle = {
        "source": f"msgraph-sdk {importlib.metadata.version('msgraph-sdk')}, msgraph-core {importlib.metadata.version('msgraph-core')}",
        "routes": routes,
        "models": models,
        "enums": enums,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(oracle, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    sys.stderr.write(
        f"wrote {args.output}: {len(routes)} routes, {len(models)} models, {len(enums)} enums\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
