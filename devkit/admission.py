"""An approximation of kube-apiserver's validation of disklet's custom objects, offline.

Evaluates the OpenAPI schema (``jsonschema``) and every ``x-kubernetes-validations`` CEL rule of
the generated CRDs with Google's CEL runtime (``cel-expr-python``), the way the API server
applies them: defaults first, rules bound to the schema node they sit on (``self``), transition
rules (``oldSelf``) only where the old value correlates (object properties, and list-map items
by key), rules skipped where the value is absent.

Why cel-expr-python: it is Google's own runtime (the semantics of the Go implementation the API
server uses), parses the optional syntax, compares int/uint/double correctly, and is fast.
Kubernetes' own CEL libraries are approximated here: ``quantity()`` (with ``compareTo``,
``isGreaterThan``, ``isLessThan``, ``asInteger``), ``isQuantity()``; the strings extension comes
with the runtime. What it does NOT check: CEL cost budgets and compile-time type checking against
the schema — only a real API server enforces those (``e2e/`` covers that).
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from cel_expr_python import cel
from cel_expr_python.ext import ext_strings

from disklet.units import QuantityError, is_quantity, parse_quantity

CRDS_DIR = Path(__file__).resolve().parents[1] / "crds"
_Q = cel.Type.Map(cel.Type.STRING, cel.Type.DYN)
_MISSING = object()


def _quantity(s: str) -> dict[str, str]:
    try:  # maximum=None: kube-apiserver's rule (capped at the largest int64), not disklet's 1Ei
        return {"__quantity__": str(parse_quantity(s, maximum=None))}
    except QuantityError as exc:
        raise ValueError(f"invalid quantity {s!r}") from exc


def _qv(q: dict[str, str]) -> Decimal:
    return Decimal(q["__quantity__"])


def _cmp(a: dict[str, str], b: dict[str, str]) -> int:
    x, y = _qv(a), _qv(b)
    return (x > y) - (x < y)


_FUNCTIONS = [
    cel.FunctionDecl("quantity", [cel.Overload("k8s_quantity_string", _Q, [cel.Type.STRING], impl=_quantity)]),
    cel.FunctionDecl("isQuantity", [cel.Overload("k8s_isQuantity_string", cel.Type.BOOL, [cel.Type.STRING],
                                                 impl=lambda s: is_quantity(s, maximum=None))]),
    cel.FunctionDecl("compareTo", [cel.Overload("k8s_quantity_compareTo", cel.Type.INT, [_Q, _Q], is_member=True,
                                                impl=_cmp)]),
    cel.FunctionDecl("isGreaterThan", [cel.Overload("k8s_quantity_gt", cel.Type.BOOL, [_Q, _Q], is_member=True,
                                                    impl=lambda a, b: _cmp(a, b) > 0)]),
    cel.FunctionDecl("isLessThan", [cel.Overload("k8s_quantity_lt", cel.Type.BOOL, [_Q, _Q], is_member=True,
                                                 impl=lambda a, b: _cmp(a, b) < 0)]),
    cel.FunctionDecl("asInteger", [cel.Overload("k8s_quantity_asInteger", cel.Type.INT, [_Q], is_member=True,
                                                impl=lambda a: int(_qv(a)))]),
]


@functools.lru_cache(maxsize=1)
def _env() -> Any:
    return cel.NewEnv(variables={"self": cel.Type.DYN, "oldSelf": cel.Type.DYN}, functions=_FUNCTIONS,
                      extensions=[ext_strings.ExtStrings()])


@functools.lru_cache(maxsize=512)
def _compiled(rule: str) -> Any:
    return _env().compile(rule)


@dataclass(frozen=True)
class RuleRef:
    path: str
    rule: str
    message: str


def load_crds(directory: Path = CRDS_DIR) -> dict[str, dict[str, Any]]:
    """kind → CRD object."""
    out = {}
    for path in sorted(directory.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        out[crd["spec"]["names"]["kind"]] = crd
    return out


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def iter_rules(schema: dict[str, Any], path: str = "$") -> list[RuleRef]:
    """Every CEL rule with the schema path it is bound to."""
    out = [RuleRef(path, v["rule"], v.get("message", v["rule"])) for v in schema.get("x-kubernetes-validations", [])]
    for k, sub in (schema.get("properties") or {}).items():
        out += iter_rules(sub, f"{path}.{k}")
    if isinstance(schema.get("items"), dict):
        out += iter_rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += iter_rules(schema["additionalProperties"], f"{path}{{}}")
    return out


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting, as the API server does before validation."""
    if isinstance(value, dict):
        for k, sub in (schema.get("properties") or {}).items():
            if k not in value and "default" in sub:
                value[k] = copy.deepcopy(sub["default"])
            if k in value:
                value[k] = apply_defaults(sub, value[k])
        if isinstance(schema.get("additionalProperties"), dict):
            for k in list(value):
                value[k] = apply_defaults(schema["additionalProperties"], value[k])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def _json_schema(schema: Any) -> Any:
    """Drop Kubernetes extensions jsonschema does not know (they are not validation keywords there)."""
    if isinstance(schema, dict):
        return {k: _json_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if isinstance(schema, list):
        return [_json_schema(v) for v in schema]
    return schema


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _invalid(value: Any, detail: str) -> str:
    """The server's ``field.Invalid`` text: scalars are shown, objects and lists are not."""
    if isinstance(value, (dict, list)):
        return f"Invalid value: {detail}"
    return f"Invalid value: {_json(value)}: {detail}"


def _field(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


_BODY_SHOULD = {
    "pattern": "should match '{arg}'",
    "minimum": "should be greater than or equal to {arg}",
    "maximum": "should be less than or equal to {arg}",
    "minLength": "should be at least {arg} chars long",
    "minItems": "should have at least {arg} items",
}
"""The schema keywords kube-apiserver reports as ``Invalid value: …: <path> in body <detail>``."""


def _schema_error(e: jsonschema.ValidationError) -> str:
    """One jsonschema failure in kube-apiserver's words (``field: Type: detail``)."""
    path = _field(e.absolute_path)
    where = path or "<nil>"
    v, kw, arg = e.instance, e.validator, e.validator_value
    if kw == "enum":
        return f"{where}: Unsupported value: {_json(v)}: supported values: {', '.join(_json(a) for a in arg)}"
    if kw == "required":
        missing = e.message.split("'")[1] if "'" in e.message else ""
        return f"{_field([*e.absolute_path, missing])}: Required value"
    if kw in ("maxItems", "maxProperties"):
        return f"{where}: Too many: {len(v)}: must have at most {arg} items"
    if kw == "maxLength":
        return f"{where}: Too long: may not be more than {arg} byte{'' if arg == 1 else 's'}"
    if kw in _BODY_SHOULD:
        return f"{where}: {_invalid(v, f'{path} in body ' + _BODY_SHOULD[kw].format(arg=arg))}"
    if kw == "type":
        return f"{where}: {_invalid(v, f'{path} in body must be of type {arg}: {_json(type(v).__name__)}')}"
    return f"{where}: {_invalid(v, e.message)}"


def _duplicates(schema: dict[str, Any], value: Any, path: str, errors: list[str]) -> None:
    """``x-kubernetes-list-type: map/set`` uniqueness, as the server checks it (``Duplicate value``)."""
    if isinstance(value, dict):
        for k, sub in (schema.get("properties") or {}).items():
            if k in value:
                _duplicates(sub, value[k], f"{path}.{k}" if path else k, errors)
        return
    if not isinstance(value, list) or not isinstance(schema.get("items"), dict):
        return
    kind = schema.get("x-kubernetes-list-type")
    seen: set[str] = set()
    for i, item in enumerate(value):
        if kind == "map" and isinstance(item, dict):
            key = {k: item.get(k) for k in schema.get("x-kubernetes-list-map-keys") or []}
        elif kind == "set":
            key = item
        else:
            _duplicates(schema["items"], item, f"{path}[{i}]", errors)
            continue
        text = _json(key)
        if text in seen:
            errors.append(f"{path}[{i}]: Duplicate value: {text}")
        seen.add(text)
        _duplicates(schema["items"], item, f"{path}[{i}]", errors)


def _message(v: dict[str, Any], data: dict[str, Any], rule: str) -> str:
    """``messageExpression`` when it evaluates to a string (as the API server does), else ``message``."""
    expr = v.get("messageExpression")
    if expr:
        try:
            out = _compiled(expr).eval(data=data)
            if out.type() == cel.Type.STRING:
                return str(out.plain_value())
        except Exception:  # noqa: BLE001, S110 - the server falls back to message too
            pass
    return str(v.get("message", rule))


def _eval_object_rules(schema: dict[str, Any], new: dict[str, Any], errors: list[str]) -> None:
    """Rules on the whole object (they may read metadata.name), without descending."""
    _eval_rules({"x-kubernetes-validations": schema.get("x-kubernetes-validations", [])}, new, _MISSING, "<nil>", errors)


def _eval_rules(schema: dict[str, Any], new: Any, old: Any, path: str, errors: list[str]) -> None:
    for v in schema.get("x-kubernetes-validations", []):
        rule = v["rule"]
        uses_old = "oldSelf" in rule
        if uses_old and old is _MISSING:
            continue
        data = {"self": new}
        if uses_old:
            data["oldSelf"] = old
        try:
            result = _compiled(rule).eval(data=data)
        except Exception as exc:  # a rule that cannot compile/evaluate is a bug in our CRDs
            errors.append(f"{path}: rule {rule!r} failed to evaluate: {exc}")
            continue
        if result.type() == cel.Type.ERROR:
            errors.append(f"{path}: rule {rule!r} evaluation error: {result.value()}")
        elif result.plain_value() is not True:
            errors.append(f"{path}: {_invalid(new, _message(v, data, rule))}")
    if isinstance(new, dict):
        for k, sub in (schema.get("properties") or {}).items():
            if k in new:
                old_k = old.get(k, _MISSING) if isinstance(old, dict) else _MISSING
                _eval_rules(sub, new[k], old_k, f"{path}.{k}", errors)
        if isinstance(schema.get("additionalProperties"), dict):
            for k, val in new.items():
                old_k = old.get(k, _MISSING) if isinstance(old, dict) else _MISSING
                _eval_rules(schema["additionalProperties"], val, old_k, f"{path}[{k}]", errors)
    elif isinstance(new, list) and isinstance(schema.get("items"), dict):
        keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
        old_by_key: dict[tuple[Any, ...], Any] = {}
        if keys and isinstance(old, list):
            old_by_key = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)}
        for i, item in enumerate(new):
            old_item = _MISSING
            if keys and isinstance(item, dict):
                old_item = old_by_key.get(tuple(item.get(k) for k in keys), _MISSING)
            _eval_rules(schema["items"], item, old_item, f"{path}[{i}]", errors)


BLOCKING_KEYWORDS = frozenset({"enum", "required", "maxLength", "maxItems", "maxProperties", "type"})
"""Schema failures after which kube-apiserver runs no CEL rule at all for the object (its
``hasBlockingErr``: NotSupported, Required, TooLong, TooMany, TypeInvalid). Pattern, minimum,
minLength, minItems and the like do not block: the rules still run."""
RULES_NOT_CHECKED = ("<nil>: Invalid value: null: some validation rules were not checked because the "
                     "object was invalid; correct the existing errors to complete validation")


def validate_object(crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Errors the API server would report for creating ``obj`` or updating ``old``, in its words
    (``field: Type: detail``, one string per cause; checked against a real server by
    e2e/test_crds.py::test_cel_rule_on_the_server).

    As on the server, a blocking schema error (see :data:`BLOCKING_KEYWORDS`) means no CEL rule
    runs; the result then ends with :data:`RULES_NOT_CHECKED`."""
    schema = schema_of(crd)
    new = apply_defaults(schema, copy.deepcopy(obj))
    prev = apply_defaults(schema, copy.deepcopy(old)) if old is not None else _MISSING
    schema_errors = list(jsonschema.Draft7Validator(_json_schema(schema)).iter_errors(new))
    errors = [_schema_error(e) for e in schema_errors]
    _duplicates(schema, new, "", errors)
    if any(e.validator in BLOCKING_KEYWORDS for e in schema_errors):
        return [*errors, RULES_NOT_CHECKED]
    # Only spec and the object-level rules (they may read metadata.name) carry rules users hit;
    # status and metadata are validated by schema alone.
    _eval_object_rules(schema, new, errors)
    for part in ("spec",):
        if part in new and part in (schema.get("properties") or {}):
            old_part = prev.get(part, _MISSING) if isinstance(prev, dict) else _MISSING
            _eval_rules(schema["properties"][part], new[part], old_part, part, errors)
    return errors


class Admission:
    """A validator for :class:`devkit.kubeapi.KubeAPI` (``validator=Admission()``)."""

    def __init__(self, directory: Path = CRDS_DIR):
        self.by_plural = {crd["spec"]["names"]["plural"]: crd for crd in load_crds(directory).values()}

    def __call__(self, plural: str, new: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
        crd = self.by_plural.get(plural)
        if crd is None:
            return []
        return validate_object(crd, new, old)
