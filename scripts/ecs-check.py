#!/usr/bin/env python3
"""Checks ECS JSON records against a pinned ecs_flat.yml (elastic/ecs).

Usage: ecs-check.py ECS_FLAT_YML RECORDS.jsonl...

Each line of a records file is one JSON object: an audit record of the filter, or an
access-log line of `certgate emit access-log` (whose `certgate.decision`, the filter's
record as text, is checked as a record of its own). A record passes when

- every field (nested objects are read as dotted names) is an ECS field of the pinned
  file or lies under `certgate.`;
- its value has the field's type (keyword and text: string; long: integer; float:
  number; boolean; ip: an IPv4 or IPv6 address; date: RFC 3339 with a time zone), an
  array only where ECS normalises the field to one;
- a field with allowed values (event.kind, event.category, event.type, event.outcome)
  holds only those, and each event.type is one the record's event.category expects;
- ecs.version is the pinned file's release, and every required field is present.

Prints every problem as `FILE:LINE: FIELD: what is wrong` and exits 1 if there is one;
exit 0 prints how many records passed. Exit 2: unreadable input.
"""

import datetime
import ipaddress
import json
import re
import sys

import yaml

STRINGS = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text"}
INTEGERS = {"long", "integer", "short", "byte", "unsigned_long"}
NUMBERS = {"float", "double", "scaled_float", "half_float"}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def load_schema(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    tag = re.search(r"^# tag: v(\S+)$", text, re.M)
    if not tag:
        raise ValueError(f"{path}: no `# tag: v<version>` header naming the release")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tag.group(1), yaml.load(text, Loader=loader)


def flatten(obj, prefix="", out=None):
    out = {} if out is None else out
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not name.startswith("certgate."):
            flatten(value, name + ".", out)
        else:
            out[name] = value
    return out


def type_problem(ecs_type, value):
    """What is wrong with `value` as one value of an `ecs_type` field, or None."""
    if ecs_type in STRINGS:
        return None if isinstance(value, str) else f"a {ecs_type} must be a string"
    if ecs_type in INTEGERS:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"a {ecs_type} must be an integer"
    if ecs_type in NUMBERS:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"a {ecs_type} must be a number"
    if ecs_type == "boolean":
        return None if isinstance(value, bool) else "a boolean must be true or false"
    if ecs_type == "ip":
        try:
            ipaddress.ip_address(value if isinstance(value, str) else None)
            return None
        except ValueError:
            return f"an ip must be an IPv4 or IPv6 address, not {value!r}"
    if ecs_type == "date":
        if not isinstance(value, str) or not RFC3339.match(value):
            return f"a date must be RFC 3339 with a time zone, not {value!r}"
        try:
            datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return None
        except ValueError:
            return f"{value!r} is not a date"
    if ecs_type in {"object", "flattened", "nested"}:
        return None if isinstance(value, (dict, list)) else f"a {ecs_type} must be an object"
    return f"type {ecs_type} is not checked by this tool"


def check_record(record, version, schema):
    problems = []
    fields = flatten(record)
    for name, value in fields.items():
        if name.startswith("certgate."):
            continue
        spec = schema.get(name)
        if spec is None:
            problems.append((name, "not an ECS field (certgate's own fields go under `certgate.`)"))
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and "array" not in (spec.get("normalize") or []):
            problems.append((name, "ECS does not make this field an array"))
        for v in values:
            why = type_problem(spec["type"], v)
            if why:
                problems.append((name, why))
        allowed = spec.get("allowed_values")
        if allowed:
            names = {a["name"] for a in allowed}
            for v in values:
                if v not in names:
                    problems.append((name, f"{v!r} is not one of ECS's values: {', '.join(sorted(names))}"))
    categories = fields.get("event.category", [])
    categories = categories if isinstance(categories, list) else [categories]
    types = fields.get("event.type", [])
    types = types if isinstance(types, list) else [types]
    expected = set()
    for a in schema["event.category"].get("allowed_values", []):
        if a["name"] in categories:
            expected.update(a.get("expected_event_types") or [])
    for t in types:
        if categories and t not in expected:
            problems.append(("event.type", f"{t!r} is not a type ECS expects for event.category {categories}"))
    if "ecs.version" in fields and fields["ecs.version"] != version:
        problems.append(("ecs.version", f"{fields['ecs.version']!r}, but the pinned schema is {version}"))
    for name, spec in schema.items():
        if spec.get("required") and name not in fields:
            problems.append((name, "required by ECS, missing"))
    return problems


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        version, schema = load_schema(argv[1])
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"cannot read the ECS schema: {e}", file=sys.stderr)
        return 2
    bad = 0
    good = 0
    for path in argv[2:]:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            print(f"cannot read {path}: {e}", file=sys.stderr)
            return 2
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"{where}: not JSON: {e}")
                bad += 1
                continue
            if not isinstance(record, dict):
                print(f"{where}: not a JSON object")
                bad += 1
                continue
            records = [("", record)]
            decision = record.get("certgate.decision")
            if decision is not None:
                try:
                    inner = json.loads(decision) if isinstance(decision, str) else None
                except json.JSONDecodeError:
                    inner = None
                if not isinstance(inner, dict):
                    print(f"{where}: certgate.decision: not a JSON object as text")
                    bad += 1
                else:
                    records.append(("certgate.decision ", inner))
            for label, r in records:
                problems = check_record(r, version, schema)
                for field, why in problems:
                    print(f"{where}: {label}{field}: {why}")
                if problems:
                    bad += 1
                else:
                    good += 1
    if bad:
        print(f"{bad} record(s) do not conform to ECS {version}")
        return 1
    print(f"{good} record(s) conform to ECS {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
