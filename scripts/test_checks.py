#!/usr/bin/env python3
"""Tests of the two repository checks `make lint` runs (check-module-cycles.py and
check-file-refs.py): each is run on a small repository made here, with a planted defect it
must report and look-alikes it must leave alone. Python 3 standard library only."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def make_repo(files):
    root = tempfile.mkdtemp(prefix="certgate-check-")
    atexit.register(shutil.rmtree, root, True)
    os.mkdir(os.path.join(root, "scripts"))
    for script in ("check-module-cycles.py", "check-file-refs.py"):
        with open(os.path.join(HERE, script), encoding="utf-8") as src, open(
            os.path.join(root, "scripts", script), "w", encoding="utf-8"
        ) as dst:
            dst.write(src.read())
    for path, text in files.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as f:
            f.write(text)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    return root


def run(root, script, *args):
    p = subprocess.run([sys.executable, os.path.join(root, "scripts", script), *args],
                       cwd=root, capture_output=True, text=True)
    return p.returncode, p.stderr


CRATE = {
    "c/Cargo.toml": '[package]\nname = "c"\n',
    "c/src/lib.rs": "mod a;\nmod b;\nmod d;\npub mod e;\npub use e::Thing;\n"
                    "#[cfg(test)]\nmod tests;\n",
    # a -> b -> a through a grouped use and a path in code
    "c/src/a.rs": "use crate::{b::{self, Bee}};\npub struct Ay;\nfn f() { b::g(); }\n",
    "c/src/b.rs": "pub struct Bee;\npub fn g() { let _ = crate::a::Ay; }\n",
    # d names a only in comments, strings and its test module: no edge
    "c/src/d.rs": "// crate::a::Ay\nconst S: &str = \"crate::a::Ay\";\n"
                  "#[cfg(test)]\nmod tests {\n    use crate::a::Ay;\n}\n",
    # e reaches the crate root's re-export of its own item: not a cycle through the root
    "c/src/e.rs": "pub struct Thing;\nfn h() { let _ = crate::Thing; }\n",
    "c/src/tests.rs": "use crate::a::Ay;\n",
}


class ModuleCycles(unittest.TestCase):
    def test_reports_a_cycle_once_and_nothing_else(self):
        root = make_repo(CRATE)
        code, err = run(root, "check-module-cycles.py")
        self.assertEqual(code, 1)
        cycles = [ln for ln in err.splitlines() if ln.startswith("import cycle:")]
        self.assertEqual(cycles, ["import cycle: c (lib): a -> b -> a"])

    def test_longer_cycles_are_found(self):
        files = dict(CRATE)
        files["c/src/b.rs"] = "pub struct Bee;\npub fn g() { super::d::k(); }\n"
        files["c/src/d.rs"] = "pub fn k() { crate::a::Ay; }\n"
        root = make_repo(files)
        code, err = run(root, "check-module-cycles.py")
        self.assertEqual(code, 1)
        self.assertIn("import cycle: c (lib): a -> b -> d -> a", err)

    def test_baseline_tolerates_listed_cycles_and_must_shrink(self):
        root = make_repo(CRATE)
        base = os.path.join(root, "baseline")
        self.assertEqual(run(root, "check-module-cycles.py", "--write-baseline", base)[0], 0)
        self.assertEqual(run(root, "check-module-cycles.py", "--baseline", base), (0, ""))
        with open(base, "a", encoding="utf-8") as f:
            f.write("c (lib): a -> d -> a\n")
        code, err = run(root, "check-module-cycles.py", "--baseline", base)
        self.assertEqual(code, 1)
        self.assertIn("`c (lib): a -> d -> a` is no longer a cycle", err)


class FileRefs(unittest.TestCase):
    def test_missing_and_forbidden_citations(self):
        root = make_repo({
            "docs/a.md": "# a\nSee [b](b.md), [gone](gone.md), `docs/a.md` and `mk/x.mk`.\n"
                         "Not here: NOTES.md.\n```\ncat docs/example-only.md\n```\n",
            "docs/b.md": "Back to [a](./a.md#top), the reader's `payments.yaml` and "
                         "`policies/X.yaml`, https://example.com/docs/none.md.\n",
            "mk/x.mk": "# see docs/missing.md and scripts/none.sh\nX := 1\n",
            "c/src/lib.rs": "//! From `src/lib.rs`; `src/other.rs` is gone, see HANDBOOK.md\n"
                            "const S: &str = \"docs/not-a-comment.md\";\n",
        })
        code, err = run(root, "check-file-refs.py")
        self.assertEqual(code, 1)
        self.assertEqual(sorted(err.splitlines()), sorted([
            "docs/a.md:2: links to `gone.md`, which does not exist",
            "docs/a.md:3: cites `NOTES.md`, which does not exist",
            "mk/x.mk:1: cites `docs/missing.md`, which does not exist",
            "mk/x.mk:1: cites `scripts/none.sh`, which does not exist",
            "c/src/lib.rs:1: cites `src/other.rs`, which does not exist",
            "c/src/lib.rs:1: cites `HANDBOOK.md`, which does not exist",
        ]))


if __name__ == "__main__":
    unittest.main()
