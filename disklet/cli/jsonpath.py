"""kubectl's JSONPath (``-o jsonpath=…``, ``custom-columns``, CRD printer columns). Pure.

The subset kubectl documents: ``{.a.b}``, ``{.a['b.c']}``, ``{.list[0]}``, ``{.list[-1]}``,
``{.list[1:3]}``, ``{.list[*]}``, ``{.*}``, ``{..name}``, ``{.list[?(@.type=="Ready")].status}``
(operators ``== != < <= > >=``, or ``?(@.key)`` for presence), ``{range EXPR}…{end}``, string
literals ``{"\\n"}`` and ``{@}``. Several results of one expression are joined by a space; strings
print as is, maps and lists as JSON; a missing key prints nothing (kubectl's ``get`` default).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


class JSONPathError(ValueError):
    """A template that does not parse; the message names the offending part."""


@dataclass(frozen=True)
class _Field:
    name: str  # "*" = every value


@dataclass(frozen=True)
class _Recursive:
    name: str


@dataclass(frozen=True)
class _Index:
    start: int | None
    stop: int | None
    single: bool


@dataclass(frozen=True)
class _Filter:
    path: tuple[Any, ...]
    op: str | None
    value: Any


_TOKEN = re.compile(r"""\.\.|\.|\[|[A-Za-z0-9_\-$@]+""")
_FILTER = re.compile(r"^\?\(\s*@(?P<path>[^=!<>]*?)\s*(?:(?P<op>==|!=|<=|>=|<|>)\s*(?P<value>.+?))?\s*\)$")


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_path(expr: str) -> tuple[Any, ...]:
    """``.a.b[0]`` → steps. Accepts a leading ``$``, ``@`` or nothing."""
    s = expr.strip()
    if s.startswith(("$", "@")):
        s = s[1:]
    steps: list[Any] = []
    i = 0
    while i < len(s):
        if s.startswith("..", i):
            m = re.match(r"[A-Za-z0-9_\-]+|\*", s[i + 2:])
            if not m:
                raise JSONPathError(f"expected a field name after '..' in {expr!r}")
            steps.append(_Recursive(m.group(0)))
            i += 2 + len(m.group(0))
        elif s[i] == ".":
            m = re.match(r"[A-Za-z0-9_\-/]+|\*", s[i + 1:])
            if not m:
                if i + 1 == len(s):  # "." alone: the current object
                    break
                raise JSONPathError(f"expected a field name after '.' in {expr!r}")
            steps.append(_Field(m.group(0)))
            i += 1 + len(m.group(0))
        elif s[i] == "[":
            depth, j = 0, i
            while j < len(s):
                if s[j] == "[":
                    depth += 1
                elif s[j] == "]":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= len(s):
                raise JSONPathError(f"unclosed '[' in {expr!r}")
            steps.append(_bracket(s[i + 1:j], expr))
            i = j + 1
        elif s[i].isspace():
            i += 1
        else:
            m = re.match(r"[A-Za-z0-9_\-]+", s[i:])
            if not m or steps:
                raise JSONPathError(f"unexpected {s[i:]!r} in {expr!r}")
            steps.append(_Field(m.group(0)))  # "metadata.name" without the leading dot
            i += len(m.group(0))
    return tuple(steps)


def _bracket(inner: str, expr: str) -> Any:
    inner = inner.strip()
    if inner == "*":
        return _Index(None, None, single=False)
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return _Field(inner[1:-1])
    if inner.startswith("?"):
        m = _FILTER.match(inner)
        if not m:
            raise JSONPathError(f"unsupported filter [{inner}] in {expr!r}")
        return _Filter(parse_path(m.group("path") or ""), m.group("op"),
                       _literal(m.group("value")) if m.group("value") is not None else None)
    try:
        if ":" in inner:
            a, b = (inner.split(":") + [""])[:2]
            return _Index(int(a) if a.strip() else None, int(b) if b.strip() else None, single=False)
        return _Index(int(inner), None, single=True)
    except ValueError:
        raise JSONPathError(f"unsupported index [{inner}] in {expr!r}") from None


def _compare(left: Any, op: str, right: Any) -> bool:
    try:
        if op == "==":
            return bool(left == right or str(left) == str(right))
        if op == "!=":
            return bool(left != right and str(left) != str(right))
        if isinstance(left, str) != isinstance(right, str):
            left, right = float(left), float(right)
        return bool({"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op])
    except (TypeError, ValueError):
        return False


def _walk(node: Any, name: str) -> list[Any]:
    out: list[Any] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if name == "*" or k == name:
                out.append(v)
            out.extend(_walk(v, name))
    elif isinstance(node, list):
        for v in node:
            out.extend(_walk(v, name))
    return out


def evaluate(steps: tuple[Any, ...], data: Any) -> list[Any]:
    """Every value ``steps`` reaches in ``data`` (missing keys reach nothing)."""
    current = [data]
    for step in steps:
        nxt: list[Any] = []
        for node in current:
            if isinstance(step, _Field):
                if isinstance(node, dict):
                    if step.name == "*":
                        nxt.extend(node.values())
                    elif step.name in node:
                        nxt.append(node[step.name])
            elif isinstance(step, _Recursive):
                nxt.extend(_walk(node, step.name))
            elif isinstance(step, _Index):
                if isinstance(node, list):
                    if step.single:
                        assert step.start is not None
                        if -len(node) <= step.start < len(node):
                            nxt.append(node[step.start])
                    else:
                        nxt.extend(node[step.start:step.stop])
                elif isinstance(node, dict) and not step.single and step.start is None:
                    nxt.extend(node.values())
            elif isinstance(step, _Filter) and isinstance(node, list):
                for item in node:
                    found = evaluate(step.path, item)
                    if step.op is None:
                        keep = bool(found) and found[0] not in (None, False, "")
                    else:
                        keep = any(_compare(v, step.op, step.value) for v in found)
                    if keep:
                        nxt.append(item)
        current = nxt
    return current


def text_of(value: Any) -> str:
    """How kubectl prints one JSONPath result."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


# ---------------------------------------------------------------------------- templates
def _split_template(template: str) -> list[tuple[str, str]]:
    """[("text", …) | ("expr", …)] — ``{…}`` blocks, honouring quotes inside them."""
    parts: list[tuple[str, str]] = []
    i, buf = 0, ""
    while i < len(template):
        c = template[i]
        if c == "{":
            if buf:
                parts.append(("text", buf))
                buf = ""
            j, quote = i + 1, ""
            while j < len(template):
                if quote:
                    if template[j] == "\\":
                        j += 1
                    elif template[j] == quote:
                        quote = ""
                elif template[j] in "'\"":
                    quote = template[j]
                elif template[j] == "}":
                    break
                j += 1
            if j >= len(template):
                raise JSONPathError(f"unclosed '{{' in template {template!r}")
            parts.append(("expr", template[i + 1:j].strip()))
            i = j + 1
        else:
            buf += c
            i += 1
    if buf:
        parts.append(("text", buf))
    return parts


def _unescape(text: str) -> str:
    return text.encode("utf-8").decode("unicode_escape") if "\\" in text else text


def render_template(template: str, data: Any) -> str:
    """``-o jsonpath=TEMPLATE`` of ``data``."""
    tree, rest = _nest(_split_template(template), 0, template)
    if rest != len(_split_template(template)):
        raise JSONPathError(f"'{{end}}' without '{{range}}' in {template!r}")
    return _run(tree, data)


def _nest(parts: list[tuple[str, str]], i: int, template: str) -> tuple[list[Any], int]:
    out: list[Any] = []
    while i < len(parts):
        kind, text = parts[i]
        if kind == "expr" and text == "end":
            return out, i
        if kind == "expr" and text.startswith("range "):
            body, j = _nest(parts, i + 1, template)
            if j >= len(parts):
                raise JSONPathError(f"'{{range}}' without '{{end}}' in {template!r}")
            out.append(("range", parse_path(text[len("range "):]), body))
            i = j + 1
            continue
        if kind == "text":
            out.append(("text", text))
        elif len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            out.append(("text", _unescape(text[1:-1])))
        else:
            out.append(("expr", parse_path(text)))
        i += 1
    return out, i


def _run(tree: list[Any], data: Any) -> str:
    out = []
    for node in tree:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            out.append(" ".join(text_of(v) for v in evaluate(node[1], data)))
        else:
            for item in evaluate(node[1], data):
                out.append(_run(node[2], item))
    return "".join(out)


def strip_braces(expr: str) -> str:
    """``{.a.b}`` → ``.a.b`` (custom-columns and printer columns take either)."""
    e = expr.strip()
    return e[1:-1].strip() if e.startswith("{") and e.endswith("}") else e
