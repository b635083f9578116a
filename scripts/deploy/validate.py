"""Validates every object of rendered manifests; any object it cannot check fails.

- Kubernetes kinds: kubernetes-validate --strict (unknown fields fail) for one version.
- KEDA (keda.sh/v1alpha1): cloudcoil-models-keda's pydantic models, every model switched to
  extra="forbid" and validated strictly (wrong types, unknown fields, missing
  scaleTargetRef fail).
- ServiceMonitor (monitoring.coreos.com/v1): the subset of the Prometheus Operator's CRD the
  chart uses, as a JSON schema with additionalProperties false (SERVICE_MONITOR below).
- Anything else: an unknown kind, which fails.

    python validate.py [--k8s-version 1.30] FILE...
"""

from __future__ import annotations

import argparse
import inspect
import sys

import jsonschema
import kubernetes_validate
import pydantic
import yaml

_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STR}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
SERVICE_MONITOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "additionalProperties": False, "required": ["name"],
                     "properties": {"name": _STR, "namespace": _STR, "labels": _LABELS,
                                    "annotations": _LABELS}},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": _STR,
                "selector": {"type": "object", "additionalProperties": False, "properties": {
                    "matchLabels": _LABELS, "matchExpressions": {"type": "array"}}},
                "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STR}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "properties": {
                        "port": _STR, "targetPort": {"type": ["string", "integer"]},
                        "path": _STR, "scheme": {"enum": ["http", "https"]},
                        "interval": _DURATION, "scrapeTimeout": _DURATION,
                        "honorLabels": {"type": "boolean"},
                        "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"}}}},
            },
        },
    },
}


def _keda_models():
    """ScaledObject & co. with extra="forbid" on every nested model."""
    from cloudcoil import apimachinery
    from cloudcoil.models.keda import v1alpha1

    for module in (apimachinery, v1alpha1):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, pydantic.BaseModel) and cls.__module__ == module.__name__:
                cls.model_config["extra"] = "forbid"
    # A model embeds its fields' schemas when it is built, so rebuild until the leaves'
    # new config has reached the top (nesting depth passes at most; alphabetical order).
    classes = [cls for module in (apimachinery, v1alpha1)
               for _, cls in inspect.getmembers(module, inspect.isclass)
               if issubclass(cls, pydantic.BaseModel) and cls.__module__ == module.__name__]
    for _ in range(8):
        for cls in classes:
            cls.model_rebuild(force=True)
    return {name: getattr(v1alpha1, name) for name in
            ("ScaledObject", "ScaledJob", "TriggerAuthentication", "ClusterTriggerAuthentication")}


_KEDA = None


def validate_object(doc: dict, k8s_version: str) -> list[str]:
    """Returns the problems of one object (empty when it is valid)."""
    global _KEDA
    api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    if api.startswith("keda.sh/"):
        if _KEDA is None:
            _KEDA = _keda_models()
        if api != "keda.sh/v1alpha1" or kind not in _KEDA:
            return [f"unknown KEDA kind {api} {kind}"]
        try:
            _KEDA[kind].model_validate(doc, strict=True)
        except pydantic.ValidationError as error:
            return [f"{e['loc']}: {e['msg']}" for e in error.errors()]
        return []
    if api == "monitoring.coreos.com/v1" and kind == "ServiceMonitor":
        validator = jsonschema.Draft7Validator(SERVICE_MONITOR)
        return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"unknown kind {api} {kind}: no schema to check it against"]
    except kubernetes_validate.ValidationError as error:
        path = "/".join(str(p) for p in error.path)
        return [f"{path}: {error.message}"]
    return []


def load_docs(path: str) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s-version", default="1.30")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    failed = 0
    for path in args.files:
        docs = load_docs(path)
        if not docs:
            print(f"{path}: no objects", file=sys.stderr)
            failed += 1
        for doc in docs:
            name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            for problem in validate_object(doc, args.k8s_version):
                print(f"{path}: {name}: {problem}", file=sys.stderr)
                failed += 1
        print(f"  {path}: {len(docs)} objects checked")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
