"""Loading kctl manifests: a file, a directory or multi-document YAML, validated as one batch.

Pure except for reading files. Accepts the seed's style (no ``apiVersion``; ``spec.nodeId``) and
inlines ``spec.layoutNixFile`` (read next to the manifest) into ``spec.layoutNix``, because the API
server rejects ``layoutNixFile``. Every document is validated with the pydantic model that is the
CRD's source of truth; if any document is wrong, the whole batch is refused and nothing is sent.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from disklet import API_VERSION
from disklet.api.common import DNS_SUBDOMAIN
from disklet.api.disklayout import DiskLayoutSpec
from disklet.api.lvm import LVMVolumeGroupSetSpec, LVMVolumeGroupSpec
from disklet.api.resources import DISK_LAYOUT, LVM_VOLUME_GROUP, LVM_VOLUME_GROUP_SET, Resource
from disklet.layout import LayoutError, layout_problems, read_layout_nix_file
from disklet.safeyaml import MAX_BYTES, YamlLimitError, load_with_nodes

APPLYABLE: dict[str, tuple[Resource, type[BaseModel]]] = {
    DISK_LAYOUT.kind: (DISK_LAYOUT, DiskLayoutSpec),
    LVM_VOLUME_GROUP.kind: (LVM_VOLUME_GROUP, LVMVolumeGroupSpec),
    LVM_VOLUME_GROUP_SET.kind: (LVM_VOLUME_GROUP_SET, LVMVolumeGroupSetSpec),
}
MANIFEST_SUFFIXES = (".yaml", ".yml")
KEPT_METADATA = ("name", "labels", "annotations")


@dataclass
class Manifest:
    """One validated document, ready to send (``obj`` is the wire object)."""

    source: str
    """``file:line`` (1-based line where the document starts), for messages."""
    resource: Resource
    name: str
    obj: dict[str, Any]
    spec: BaseModel
    base_dir: Path

    @property
    def kind(self) -> str:
        return self.resource.kind

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class ManifestError(Exception):
    """The batch is refused: every problem found, each prefixed by ``file:line`` (1-based)."""

    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(self.problems)


def manifest_files(path: Path) -> list[Path]:
    """The files a ``-f PATH`` names: the file itself, or a directory's *.yaml/*.yml sorted by name."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
        if not files:
            raise ManifestError([f"{path}: no *.yaml or *.yml files in this directory"])
        return files
    if not path.exists():
        raise ManifestError([f"{path}: no such file or directory"])
    return [path]


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_SHOULD = (("Input should be", "must be"), ("String should", "must"), ("List should", "must"),
           ("Value should", "must"), ("Dictionary should", "must"), ("Field required", "is required"))


def human_message(err: Any) -> str:
    """One pydantic error in our words: no ``Value error,`` prefix, no regular expressions."""
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid"))
    value = err.get("input")
    shown = repr(value) if isinstance(value, str | int | float) and len(repr(value)) <= 80 else "this value"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; fields are camelCase)"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        return f"{shown} is not allowed here (see `kubectl explain` for this field's format)"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    for a, b in _SHOULD:
        if msg.startswith(a):
            msg = b + msg[len(a):]
    return msg


def format_validation_error(exc: ValidationError, prefix: str, line_of: Any = None) -> list[str]:
    """pydantic errors as ``spec.disks[0].device: message`` lines.

    ``line_of(loc)`` (optional) gives the 1-based line of that field; ``prefix`` may hold ``{line}``.
    """
    lines = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        where = _loc(loc)
        line = line_of(loc) if line_of else None
        head = prefix.replace("{line}", str(line)) if line else prefix
        lines.append(f"{head}{'.' + where if where else ''}: {human_message(err)}")
    return lines


def node_line(node: Any, path: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at ``path`` (of the deepest part of it that exists)."""
    if node is None:
        return None
    for part in path:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1


def normalize_document(doc: Any, base_dir: Path, source: str, node: Any = None) -> Manifest:
    """One YAML document → Manifest, or ManifestError with every problem in it.

    ``source`` is ``file:line``; with the document's YAML ``node``, spec problems name the line of
    the offending field instead of the document's first line."""
    if not isinstance(doc, dict):
        raise ManifestError([f"{source}: expected a mapping with kind, metadata and spec, got {type(doc).__name__}"])
    problems: list[str] = []
    api_version = doc.get("apiVersion", API_VERSION)
    kind = doc.get("kind")
    if kind not in APPLYABLE:
        hint = " (BlockDevices are written by the agent, not applied)" if kind == "BlockDevice" else ""
        raise ManifestError([f"{source}: kind {kind!r} is not one kctl applies; use one of "
                             f"{', '.join(APPLYABLE)}{hint}"])
    resource, spec_model = APPLYABLE[kind]
    if api_version != API_VERSION:
        problems.append(f"{source}: apiVersion {api_version!r} is not served; use {API_VERSION} (or omit it)")
    meta = doc.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    where = f"{source} {kind}/{name or '?'}"
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: metadata.name is required")
    elif len(name) > 253 or not re.fullmatch(DNS_SUBDOMAIN, name):
        problems.append(f"{where}: metadata.name {name!r} must be a lowercase DNS name (a-z, 0-9, '-', '.')")
    if isinstance(meta, dict) and meta.get("namespace"):
        problems.append(f"{where}: {kind} is cluster-scoped; remove metadata.namespace")
    unknown_top = set(doc) - {"apiVersion", "kind", "metadata", "spec", "status"}
    if unknown_top:
        problems.append(f"{where}: unknown top-level field(s) {', '.join(sorted(unknown_top))}")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        problems.append(f"{where}: spec is required (a mapping)")
        raise ManifestError(problems)
    spec = dict(spec)
    if kind == DISK_LAYOUT.kind:
        problems.extend(_normalize_disk_layout_spec(spec, base_dir, where))
    model: BaseModel | None = None
    try:
        model = spec_model.model_validate(spec)
    except ValidationError as exc:
        file = source.rpartition(":")[0] or source
        problems.extend(format_validation_error(
            exc, f"{file}:{{line}} {kind}/{name or '?'}: spec" if node is not None else f"{where}: spec",
            (lambda loc: node_line(node, ("spec", *loc))) if node is not None else None))
    if isinstance(model, DiskLayoutSpec) and model.disk_layout is not None:
        problems.extend(f"{where}: spec.diskLayout: {p}" for p in layout_problems(model.disk_layout))
    if problems or model is None:
        raise ManifestError(problems)
    assert isinstance(name, str)
    metadata = {k: meta[k] for k in KEPT_METADATA if isinstance(meta, dict) and meta.get(k)}
    obj = {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata,
           "spec": model.model_dump(mode="json", by_alias=True, exclude_unset=True)}
    return Manifest(source=source, resource=resource, name=name, obj=obj, spec=model, base_dir=base_dir)


def _normalize_disk_layout_spec(spec: dict[str, Any], base_dir: Path, where: str) -> list[str]:
    """Seed compatibility in place: nodeId → nodeName, layoutNixFile → layoutNix."""
    problems: list[str] = []
    if "nodeId" in spec:
        node_id = spec.pop("nodeId")
        if "nodeName" in spec and spec["nodeName"] != node_id:
            problems.append(f"{where}: spec.nodeId ({node_id!r}) and spec.nodeName ({spec['nodeName']!r}) "
                            "disagree; keep only nodeName")
        else:
            spec["nodeName"] = node_id
    if "layoutNixFile" in spec:
        if "layoutNix" in spec or "diskLayout" in spec:
            problems.append(f"{where}: spec: set exactly one layout source: diskLayout, layoutNix or layoutNixFile")
            spec.pop("layoutNixFile")
        else:
            path = spec.pop("layoutNixFile")
            try:
                spec["layoutNix"] = read_layout_nix_file(
                    str(path), base_dir, allow_outside=os.environ.get("DISKLET_LAYOUT_FILE_ANYWHERE") == "1")
            except LayoutError as exc:
                problems.append(f"{where}: spec.layoutNixFile: {exc}")
                spec["layoutNix"] = "{ }"
    return problems


def parse_documents(text: str, source: str, base_dir: Path) -> list[Manifest]:
    """All documents of one YAML stream (empty documents skipped), or ManifestError.

    Documents are named ``file:LINE`` by the 1-based line where they start (YAML node marks)."""
    try:
        loaded = load_with_nodes(text)  # bounded: size, aliases, depth, expanded nodes
    except YamlLimitError as exc:
        raise ManifestError([f"{source}: refused: {exc}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError([f"{at}: not valid YAML: {problem}"]) from None
    out: list[Manifest] = []
    problems: list[str] = []
    for node, doc in loaded:
        if doc is None:
            continue
        try:
            out.append(normalize_document(doc, base_dir, f"{source}:{node.start_mark.line + 1}", node))
        except ManifestError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ManifestError(problems)
    return out


def load_manifests(path: str | Path) -> list[Manifest]:
    """Every document under ``path`` (``-`` = stdin), validated as one batch; ManifestError if any is wrong."""
    manifests: list[Manifest] = []
    problems: list[str] = []
    if str(path) == "-":
        sources = [("<stdin>", sys.stdin.read(MAX_BYTES + 1), Path.cwd())]
    else:
        sources = []
        for f in manifest_files(Path(path)):
            try:
                if f.stat().st_size > MAX_BYTES:
                    problems.append(f"{f}: refused: larger than {MAX_BYTES} bytes")
                    continue
                sources.append((str(f), f.read_text(encoding="utf-8"), f.parent))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{f}: cannot read: {exc}")
    for source, text, base_dir in sources:
        try:
            manifests.extend(parse_documents(text, source, base_dir))
        except ManifestError as exc:
            problems.extend(exc.problems)
    problems.extend(batch_problems(manifests))
    if problems:
        raise ManifestError(problems)
    if not manifests:
        raise ManifestError([f"{path}: no documents found"])
    return manifests


def batch_problems(manifests: list[Manifest]) -> list[str]:
    """Rules across documents: no object twice; one DiskLayout per node."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    nodes: dict[str, str] = {}
    for m in manifests:
        if m.ref in seen:
            problems.append(f"{m.source}: {m.ref} is also defined at {seen[m.ref]}")
        seen.setdefault(m.ref, m.source)
        if isinstance(m.spec, DiskLayoutSpec):
            node = m.spec.node_name
            if node in nodes and nodes[node] != m.name:
                problems.append(f"{m.source}: {m.ref} targets node {node!r}, which DiskLayout/{nodes[node]} "
                                "already targets; one DiskLayout per node (merge the disks into one)")
            nodes.setdefault(node, m.name)
    return problems
