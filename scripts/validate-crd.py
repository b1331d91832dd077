#!/usr/bin/env python3
"""Validates Kubernetes objects against a CustomResourceDefinition's OpenAPI v3 schema.

Usage: validate-crd.py CRD.yaml OBJECT.(yaml|json)...

Exit 0 when every object is valid, 1 with one line per problem otherwise, 2 on usage or
I/O errors. Runs with the project's venv (`make venv`: PyPI `jsonschema` and `PyYAML`).

The CRD's schema is checked as the API server checks a custom resource under
`kubectl apply --validate=strict` (kubectl's default since 1.27):
- `apiVersion` must be GROUP/VERSION of a served version, `kind` the CRD's kind;
- `metadata.name` a DNS subdomain, `metadata.namespace` a DNS label, labels valid;
- unknown fields are errors (strict field validation), except under
  `x-kubernetes-preserve-unknown-fields: true`;
- `nullable: true` admits null, `format: int32` bounds integers.
The CEL rules (`x-kubernetes-validations`) are not evaluated here.
"""

import json
import re
import sys

try:
    import jsonschema
    import yaml
except ImportError as e:  # pragma: no cover - the Makefile installs both
    print(f"validate-crd: {e}; run `make venv`", file=sys.stderr)
    sys.exit(2)

DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_SUBDOMAIN = rf"(?=.{{1,253}}$){DNS_LABEL}(\.{DNS_LABEL})*"
LABEL_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
LABEL_KEY = rf"^({DNS_SUBDOMAIN}/)?{LABEL_NAME}$"
LABEL_VALUE = rf"^({LABEL_NAME})?$"


def strict(schema):
    """The structural schema as the API server applies it, in JSON-schema terms."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: strict(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = strict(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict(v) for v in value]
        else:
            out[key] = value
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("format") == "int32" and out.get("type") == "integer":
        out.setdefault("minimum", -(2**31))
        out.setdefault("maximum", 2**31 - 1)
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def object_schema(crd, version):
    """The whole object's schema: the version's openAPIV3Schema with the implicit
    apiVersion, kind and metadata fields every Kubernetes object has."""
    schema = strict(version["schema"]["openAPIV3Schema"])
    group = crd["spec"]["group"]
    props = dict(schema.get("properties", {}))
    props["apiVersion"] = {"const": f"{group}/{version['name']}"}
    props["kind"] = {"const": crd["spec"]["names"]["kind"]}
    props["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": f"^{DNS_SUBDOMAIN}$"},
            "namespace": {"type": "string", "pattern": f"^{DNS_LABEL}$"},
            "labels": {
                "type": "object",
                "propertyNames": {"pattern": LABEL_KEY},
                "additionalProperties": {"type": "string", "pattern": LABEL_VALUE},
            },
            "annotations": {
                "type": "object",
                "propertyNames": {"pattern": LABEL_KEY},
                "additionalProperties": {"type": "string"},
            },
        },
        "additionalProperties": False,
    }
    schema["properties"] = props
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    schema["additionalProperties"] = False
    return schema


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            crd = yaml.safe_load(f)
        versions = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
        objects = []
        for path in argv[2:]:
            with open(path, encoding="utf-8") as f:
                objects.extend((path, o) for o in yaml.safe_load_all(f) if o is not None)
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        print(f"validate-crd: {e}", file=sys.stderr)
        return 2
    if not objects:
        print("validate-crd: no objects to validate", file=sys.stderr)
        return 2
    problems = []
    for path, obj in objects:
        version = str(obj.get("apiVersion", "")).rpartition("/")[2] if isinstance(obj, dict) else ""
        spec = versions.get(version) or next(iter(versions.values()))
        schema = object_schema(crd, spec)
        jsonschema.Draft7Validator.check_schema(schema)
        for err in jsonschema.Draft7Validator(schema).iter_errors(obj):
            where = "/".join(str(p) for p in err.absolute_path) or "(object)"
            problems.append(f"{path}: {where}: {err.message}")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
