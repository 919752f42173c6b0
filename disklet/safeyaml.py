"""Bounded YAML loading for untrusted text (kctl manifests, files and stdin).

``yaml.safe_load`` builds no arbitrary objects but has no bound on what it builds: a few lines of
nested aliases ("billion laughs") expand to millions of nodes. This loader composes the node graph
first — aliases are shared nodes there, nothing is expanded — and refuses, before constructing any
Python object, a document that is

- longer than ``max_bytes`` (checked before parsing),
- uses more than ``max_aliases`` aliases, or an alias to itself (a recursive structure),
- nested deeper than ``max_depth`` once aliases are followed,
- more than ``max_nodes`` nodes once every alias is expanded (computed on the shared graph, in
  time proportional to its size, not to the expansion).

Numbers are resolved safely: a plain integer or float longer than ``MAX_NUMBER_CHARS`` is refused
(Python refuses to convert ints of more than 4300 digits, and a YAML 1.1 base-60 integer such as
``1:2:3:…`` costs quadratic time), and base-60 numbers are read as strings, as ``kubectl`` reads
them. Any error while constructing Python values becomes ``YamlLimitError`` (a clean refusal, never
a traceback).

Limits are generous for any real manifest (a Kubernetes object is at most ~1.5 MiB in etcd).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

MAX_BYTES = 8 * 1024**2
MAX_ALIASES = 100
MAX_DEPTH = 64
MAX_NODES = 200_000
MAX_NUMBER_CHARS = 64
"""Longest plain integer/float accepted (2**63 has 19 digits; quantities are strings)."""


class YamlLimitError(ValueError):
    """The text is valid YAML (as far as read) but beyond a loading limit."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int = MAX_BYTES
    max_aliases: int = MAX_ALIASES
    max_depth: int = MAX_DEPTH
    max_nodes: int = MAX_NODES


class _ComposingLoader(yaml.SafeLoader):
    """SafeLoader that counts aliases and nesting while composing (construction is done separately)."""

    aliases = 0
    depth = 0
    max_aliases = MAX_ALIASES
    max_depth = MAX_DEPTH

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: ANN401 - PyYAML's signature
        self.depth += 1
        try:
            if self.depth > self.max_depth:  # PyYAML composes recursively: stop before the stack does
                event = self.peek_event()
                raise YamlLimitError(f"document is nested deeper than {self.max_depth} levels"
                                     f" (line {event.start_mark.line + 1})")
            return self._compose_counted(parent, index)
        finally:
            self.depth -= 1

    def _compose_counted(self, parent: Any, index: Any) -> Any:  # noqa: ANN401
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > self.max_aliases:
                event = self.peek_event()
                raise YamlLimitError(f"more than {self.max_aliases} YAML aliases (line {event.start_mark.line + 1});"
                                     " aliases are limited to keep expansion bounded")
        return super().compose_node(parent, index)


def _number(kind: str, construct: Any) -> Any:
    def constructor(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        text = str(node.value)
        if len(text) > MAX_NUMBER_CHARS:
            raise YamlLimitError(f"{kind} of {len(text)} characters (line {node.start_mark.line + 1}); numbers are "
                                 f"limited to {MAX_NUMBER_CHARS} characters (quote it to make it a string)")
        if ":" in text:  # YAML 1.1 base 60 (1:30 = 90): kubectl reads it as a string, and so do we
            return text
        return construct(loader, node)
    return constructor


_ComposingLoader.add_constructor("tag:yaml.org,2002:int", _number("integer", yaml.SafeLoader.construct_yaml_int))
_ComposingLoader.add_constructor("tag:yaml.org,2002:float", _number("float", yaml.SafeLoader.construct_yaml_float))


def _measure(root: yaml.Node, limits: Limits) -> None:
    """Expanded node count and depth of a composed graph, without expanding it."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    on_path: set[int] = set()

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return []

    # Iterative post-order walk (a deep document must not exhaust Python's recursion limit).
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = children(node)
            sizes[key] = 1 + sum(sizes[id(k)] for k in kids)
            depths[key] = 1 + max((depths[id(k)] for k in kids), default=0)
            on_path.discard(key)
            if sizes[key] > limits.max_nodes:
                raise YamlLimitError(f"document expands to more than {limits.max_nodes} YAML nodes"
                                     f" (line {node.start_mark.line + 1}); aliases that multiply content are refused")
            if depths[key] > limits.max_depth:
                raise YamlLimitError(f"document is nested deeper than {limits.max_depth} levels"
                                     f" (line {node.start_mark.line + 1})")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlLimitError(f"recursive YAML alias (line {node.start_mark.line + 1}): an anchor refers to itself")
        on_path.add(key)
        stack.append((node, True))
        if len(on_path) > limits.max_depth:
            raise YamlLimitError(f"document is nested deeper than {limits.max_depth} levels"
                                 f" (line {node.start_mark.line + 1})")
        for kid in children(node):
            if id(kid) not in sizes:
                stack.append((kid, False))


def load_with_nodes(text: str, limits: Limits | None = None) -> list[tuple[yaml.Node, Any]]:
    """Every document of ``text`` as (its composed node, plain Python data); the node carries the
    document's position (``start_mark``). ``YamlLimitError`` or ``yaml.YAMLError`` otherwise."""
    limits = limits or Limits()
    if len(text.encode("utf-8", errors="surrogatepass")) > limits.max_bytes:
        raise YamlLimitError(f"YAML text is larger than {limits.max_bytes} bytes")
    loader = _ComposingLoader(text)
    loader.max_aliases = limits.max_aliases
    loader.max_depth = limits.max_depth
    docs: list[tuple[yaml.Node, Any]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                continue
            _measure(node, limits)
            try:
                value = loader.construct_document(node)
            except (YamlLimitError, yaml.YAMLError):
                raise
            except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
                raise YamlLimitError(f"cannot read a value of the document at line {node.start_mark.line + 1}: "
                                     f"{type(exc).__name__}: {str(exc)[:200]}") from None
            docs.append((node, value))
    finally:
        loader.dispose()
    return docs


def safe_load_all(text: str, limits: Limits | None = None) -> list[Any]:
    """Every document of ``text`` as plain Python data, or ``YamlLimitError``/``yaml.YAMLError``."""
    return [doc for _, doc in load_with_nodes(text, limits)]
