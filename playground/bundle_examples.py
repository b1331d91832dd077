"""Bundles the example policies, their CRLs and the sample certificates into one JSON file
for the playground, so the page works offline once loaded (one fetch, no directory listing).

usage: python3 playground/bundle_examples.py OUT.json   (run from the repository root)
"""

import json
import pathlib
import sys


def main() -> None:
    root = pathlib.Path(".")
    # `*.test.yaml` files hold policy tests (`certgate test`), not policies.
    policies = sorted(
        p for p in (root / "policies").glob("*.yaml") if not p.name.endswith(".test.yaml")
    )
    crls = sorted((root / "policies" / "crl").glob("*.pem"))
    certs = sorted((root / "compiler" / "tests" / "fixtures").glob("*.pem"))
    bundle = {
        "policies": [{"name": p.name, "text": p.read_text()} for p in policies],
        # Keyed by the path the policies name them by (relative to policies/).
        "files": {f"crl/{c.name}": c.read_text() for c in crls},
        "certificates": [{"name": c.name, "text": c.read_text()} for c in certs],
    }
    out = pathlib.Path(sys.argv[1])
    out.write_text(json.dumps(bundle, indent=1) + "\n")


if __name__ == "__main__":
    main()
