"""Generate ``crds/*.yaml`` from the pydantic models (never hand-edit the YAML).

    python -m disklet.api.crdgen            # write crds/
    python -m disklet.api.crdgen --check    # exit 1 when crds/ drifted from the models

Pydantic's JSON schema is turned into a Kubernetes *structural* schema: ``$ref`` inlined,
``anyOf [X, null]`` collapsed to X, titles dropped, every field keeps its description, and the
``x-kubernetes-*`` keys the models carry (CEL rules, list types) pass through.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from .resources import ALL_RESOURCES, Resource

_DROP = {"title", "discriminator"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        siblings = node
        node = _merge(target, siblings)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            node = _merge(_structural(branches[0], defs), rest)
            if node.get("default", 0) is None:
                node.pop("default")
        else:
            raise ValueError(f"cannot express a union in a structural schema: {node}")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k in _DROP or k == "$defs":
            continue
        if k == "default" and v is None:
            continue
        if k == "properties":
            out[k] = {pk: _structural(pv, defs) for pk, pv in v.items()}
        elif k in ("items", "additionalProperties") and isinstance(v, dict):
            out[k] = _structural(v, defs)
        else:
            out[k] = _structural(v, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "properties" in out:
        out.setdefault("type", "object")
        # pydantic marks aliased-with-default fields optional; keep only truly required
    if out.get("type") == "object" and "additionalProperties" in out and out["additionalProperties"] is False:
        del out["additionalProperties"]
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if k == "x-kubernetes-validations":
            out[k] = list(out.get(k, [])) + list(v)
        elif k == "items" and isinstance(v, dict) and isinstance(out.get("items"), dict):
            out["items"] = _merge(out["items"], v)
        else:
            out[k] = v
    return out


def model_schema(model: type) -> dict[str, Any]:
    raw: dict[str, Any] = model.model_json_schema(by_alias=True, mode="validation")  # type: ignore[attr-defined]
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def crd_for(res: Resource) -> dict[str, Any]:
    props: dict[str, Any] = {
        "apiVersion": {"type": "string", "description": "APIVersion of the object: disklet.io/v1alpha1."},
        "kind": {"type": "string", "description": f"Kind of the object: {res.kind}."},
        "metadata": {"type": "object"},  # the server allows nothing else here (not even a description)
    }
    required: list[str] = []
    if res.spec is not None:
        spec = model_schema(res.spec)
        spec["description"] = spec.get("description") or f"Desired state of the {res.kind}."
        props["spec"] = spec
        if res.spec_required:
            required.append("spec")
    status = model_schema(res.status)
    status["description"] = f"Observed state of the {res.kind}, written by disklet."
    props["status"] = status
    schema: dict[str, Any] = {"type": "object", "description": res.description, "properties": props}
    if required:
        schema["required"] = required
    if res.object_rules:
        schema["x-kubernetes-validations"] = list(res.object_rules)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": res.crd_name, "labels": {"app.kubernetes.io/part-of": "disklet"}},
        "spec": {
            "group": res.group,
            "scope": "Cluster",
            "names": {
                "kind": res.kind, "listKind": f"{res.kind}List", "plural": res.plural,
                "singular": res.singular, "shortNames": list(res.short_names), "categories": ["disklet"],
            },
            "versions": [{
                "name": res.version, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": list(res.printer_columns),
                "schema": {"openAPIV3Schema": schema},
            }],
        },
    }


def _clean_descriptions(node: Any) -> None:
    """Pydantic copies class docstrings into descriptions; keep them on one line."""
    if isinstance(node, dict):
        if isinstance(node.get("description"), str):
            node["description"] = " ".join(node["description"].split())
        for v in node.values():
            _clean_descriptions(v)
    elif isinstance(node, list):
        for v in node:
            _clean_descriptions(v)


def render_all() -> dict[str, str]:
    """File name → YAML text for every CRD."""
    out = {}
    for res in ALL_RESOURCES:
        crd = crd_for(res)
        _clean_descriptions(crd)
        text = "# Generated by `python -m disklet.api.crdgen` from disklet/api. Do not edit.\n"
        text += yaml.safe_dump(crd, sort_keys=False, width=120, allow_unicode=True)
        out[f"{res.group}_{res.plural}.yaml"] = text
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m disklet.api.crdgen", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "crds"), help="output directory (default: crds/)")
    ap.add_argument("--check", action="store_true", help="do not write; exit 1 if the files differ")
    args = ap.parse_args(argv)
    out = Path(args.out)
    drift = []
    for name, text in render_all().items():
        path = out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                drift.append(str(path))
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if drift:
        print("CRDs drifted from the models; run `python -m disklet.api.crdgen`:", *drift, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
