"""Offline, literal-only reading of a disko body with tree-sitter-nix (docs/design/disklayout.md#extraction).

Used only where ``nix-instantiate`` is missing (``kctl diff --offline`` on a laptop). It accepts
attribute sets (with dotted and quoted attribute paths, merged the way Nix merges them), plain
double-quoted strings without interpolation, integers, floats, booleans, null and lists, and
converts them to the same Python value evaluation would give. Everything else – ``let``, ``with``,
``rec``, ``inherit``, interpolation, concatenation, ``''`` strings, functions, variables, paths –
is refused: finding some targets but not all would leave a disk unclassified, so it fails closed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from disklet.api.disklayout import MAX_NIX_BODY

from .errors import MAX_VALUE_DEPTH, MalformedLayout, check_depth

REFUSE_HINT = "install nix or use diskLayout"
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}


@lru_cache(maxsize=1)
def _parser() -> Any:
    import tree_sitter_nix
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_nix.language()))


class _Refuse(Exception):
    pass


def _refuse(node: Any, what: str) -> _Refuse:
    line = node.start_point[0] + 1
    return _Refuse(f"line {line}: {what}")


def _named(node: Any) -> list[Any]:
    return [c for c in node.named_children if c.type != "comment"]


def _string(node: Any) -> str:
    if node.type == "indented_string_expression":
        raise _refuse(node, "'' multi-line strings are not read offline")
    if node.type != "string_expression":
        raise _refuse(node, f"{node.type} is not a literal string")
    out: list[str] = []
    after_dollar_escape = False
    for child in node.children:
        if child.type == '"':
            continue
        if child.type == "string_fragment":
            text = child.text.decode()
            if after_dollar_escape:
                out.append("$")
                text = text[1:]
            if "$" in text:
                raise _refuse(child, "a literal $ in a string is not read offline (write \\$)")
            out.append(text)
            after_dollar_escape = False
        elif child.type == "dollar_escape":
            after_dollar_escape = True
        elif child.type == "escape_sequence":
            ch = child.text.decode()[1:]
            out.append(_ESCAPES.get(ch, ch))
        elif child.type == "interpolation":
            raise _refuse(child, "string interpolation ${...} is not read offline")
        else:
            raise _refuse(child, f"{child.type} inside a string is not read offline")
    if after_dollar_escape:
        raise _refuse(node, "dangling \\$ escape")
    return "".join(out)


def _attr_name(node: Any) -> str:
    if node.type == "identifier":
        return str(node.text.decode())
    if node.type == "string_expression":
        return _string(node)
    raise _refuse(node, f"attribute name {node.text.decode()[:40]!r} is not a literal")


def _merge(target: dict[str, Any], path: list[str], value: Any, node: Any) -> None:
    for i, key in enumerate(path[:-1]):
        current = target.get(key)
        if current is None:
            current = target[key] = {}
        elif not isinstance(current, dict):
            raise _refuse(node, f"attribute {'.'.join(path[: i + 1])!r} already defined")
        target = current
    last = path[-1]
    if last in target:
        if isinstance(target[last], dict) and isinstance(value, dict):
            for k, v in value.items():
                _merge(target[last], [k], v, node)
            return
        raise _refuse(node, f"attribute {'.'.join(path)!r} already defined")
    target[last] = value


def _value(node: Any) -> Any:
    kind = node.type
    if kind == "parenthesized_expression":
        inner = _named(node)
        if len(inner) != 1:
            raise _refuse(node, "unexpected parentheses")
        return _value(inner[0])
    if kind == "attrset_expression":
        out: dict[str, Any] = {}
        for binding_set in _named(node):
            if binding_set.type != "binding_set":
                raise _refuse(binding_set, f"{binding_set.type} in an attribute set is not read offline")
            for binding in _named(binding_set):
                if binding.type != "binding":
                    raise _refuse(binding, f"{binding.type} is not read offline")
                attrpath = binding.child_by_field_name("attrpath")
                expression = binding.child_by_field_name("expression")
                if attrpath is None or expression is None:
                    raise _refuse(binding, "incomplete binding")
                path = [_attr_name(n) for n in _named(attrpath)]
                _merge(out, path, _value(expression), binding)
        return out
    if kind == "string_expression" or kind == "indented_string_expression":
        return _string(node)
    if kind == "integer_expression":
        return int(node.text.decode())
    if kind == "float_expression":
        return float(node.text.decode())
    if kind == "unary_expression" and node.children and node.children[0].type == "-":
        operand = _named(node)
        if len(operand) == 1 and operand[0].type in ("integer_expression", "float_expression"):
            return -_value(operand[0])
        raise _refuse(node, "only negative number literals are read offline")
    if kind == "list_expression":
        return [_value(c) for c in _named(node)]
    if kind == "variable_expression":
        name = node.text.decode()
        literals = {"true": True, "false": False, "null": None}
        if name in literals:
            return literals[name]
        raise _refuse(node, f"variable {name!r} is not read offline")
    words = {
        "let_expression": "let bindings", "with_expression": "with", "rec_attrset_expression": "rec { }",
        "function_expression": "a function", "binary_expression": "concatenation or an operator",
        "apply_expression": "a function call", "select_expression": "attribute selection",
        "path_expression": "a path", "hpath_expression": "a path", "spath_expression": "a <search path>",
        "if_expression": "if", "assert_expression": "assert", "let_attrset_expression": "let { }",
    }
    raise _refuse(node, f"{words.get(kind, kind)} is not read offline")


def static_evaluate(body: str) -> Any:
    """The value of a literal-only body, or MalformedLayout saying to install nix or use diskLayout."""
    try:
        return _static_evaluate(body)
    except RecursionError:
        raise MalformedLayout(f"layout body is nested deeper than the offline reader follows (limit "
                              f"{MAX_VALUE_DEPTH} levels); {REFUSE_HINT}") from None


def _static_evaluate(body: str) -> Any:
    data = body.encode()
    if len(data) > MAX_NIX_BODY:
        raise MalformedLayout(f"layout body is {len(data)} bytes; the limit is {MAX_NIX_BODY}")
    tree = _parser().parse(data)
    root = tree.root_node
    if root.has_error:
        bad = _first_error(root)
        where = f"line {bad.start_point[0] + 1}" if bad is not None else "somewhere"
        raise MalformedLayout(f"layout body does not parse ({where}); {REFUSE_HINT} for a precise message")
    top = _named(root)
    if len(top) != 1:
        raise MalformedLayout(f"layout body must be one attribute set; {REFUSE_HINT}")
    try:
        value = _value(top[0])
    except _Refuse as exc:
        raise MalformedLayout(f"offline reading refused the body ({exc}); {REFUSE_HINT}") from None
    check_depth(value)
    return value


def _first_error(node: Any) -> Any:
    if node.type == "ERROR" or node.is_missing:
        return node
    for child in node.children:
        found = _first_error(child)
        if found is not None:
            return found
    return None
