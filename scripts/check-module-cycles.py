#!/usr/bin/env python3
"""Fails when a module imports one that imports it back (A -> B -> A, or longer).

For every crate root of the workspace (src/lib.rs, src/main.rs, src/bin/*.rs) it follows the
`mod` declarations to build the module tree, then draws an edge M -> N whenever M's code names
something in N through a `crate::`, `super::` or `self::` path (or a path that starts with one
of M's child modules). A name re-exported by `pub use` is followed to the module that defines
it, and `pub use` itself is not an edge: a facade that re-exports is not a dependency. Test
code (`#[cfg(test)]` modules) is left out: tests may reach anywhere.

Each cycle is printed once, as `crate: a -> b -> a`, starting at its smallest module. Cycles
listed in the baseline file (one a line, `#` starts a comment) are tolerated while someone
removes them; a listed cycle that no longer exists is an error too, so the list only shrinks.

Usage: scripts/check-module-cycles.py [--baseline FILE] [--write-baseline FILE]
Exit codes: 0 no cycle outside the baseline, 1 cycles found (or stale baseline lines), 2 usage.
Python 3 standard library only.
"""

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Folders that hold no workspace source.
SKIP_DIRS = {"target", ".tools", "node_modules", ".git", "fuzz"}
# The most cycles listed per strongly connected component, so a tangle stays readable.
MAX_CYCLES_PER_COMPONENT = 50


def strip_comments_and_literals(src):
    """Blanks comments, string and char literals (keeping line breaks), so paths that only
    appear in docs or strings draw no edge."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if src[i] == "\n":
                        out.append("\n")
                    i += 1
        elif c == "r" and re.match(r'r#*"', src[i:i + 10]) and not (i and (src[i - 1].isalnum() or src[i - 1] == "_")):
            m = re.match(r'r(#*)"', src[i:])
            end = src.find('"' + m.group(1), i + len(m.group(0)))
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""' + "\n" * src.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'])'", src[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def split_use_tree(tree):
    """`a::{b, c::{d, e as f}}` -> [['a','b'], ['a','c','d'], ['a','c','e']] (renames dropped,
    `self` inside braces means the prefix itself, `*` kept as a segment)."""
    tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+\w+", "", tree))
    results = []

    def walk(prefix, text):
        # text is one use tree
        m = re.match(r"^((?:[\w*]+::)*)\{(.*)\}$", text)
        if m:
            pre = [s for s in m.group(1).split("::") if s]
            for part in split_top(m.group(2)):
                if part:
                    walk(prefix + pre, part)
            return
        segs = [s for s in text.split("::") if s]
        if segs == ["self"]:
            results.append(prefix)
        else:
            results.append(prefix + segs)

    def split_top(text):
        parts, depth, cur = [], 0, []
        for ch in text:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append("".join(cur))
                cur = []
            else:
                cur.append(ch)
        parts.append("".join(cur))
        return parts

    walk([], tree)
    return results


USE_RE = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);")
PATH_RE = re.compile(r"(?<![\w:])((?:crate|super|self)(?:\s*::\s*[\w]+)+|[a-z_]\w*(?:\s*::\s*\w+)+)")
MOD_RE = re.compile(r"((?:#\s*\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*([;{])")


class Module:
    def __init__(self, path, file):
        self.path = path  # tuple of segments, () for the crate root
        self.file = file
        self.children = {}
        self.code = ""  # this module's own code, child inline modules removed
        self.uses = []  # (is_pub, [segments])
        self.reexports = {}  # name -> module path tuple


def matching_brace(text, open_at):
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


def load_module(modules, path, file, code, dir_for_children):
    mod = Module(path, file)
    modules[path] = mod
    own = []
    pos = 0
    for m in MOD_RE.finditer(code):
        if m.start() < pos:
            continue
        attrs, name, kind = m.group(1), m.group(2), m.group(3)
        own.append(code[pos:m.start()])
        is_test = "cfg(test)" in attrs.replace(" ", "") or name == "tests" and kind == "{"
        if kind == "{":
            close = matching_brace(code, m.end() - 1)
            pos = close + 1
            if is_test:
                continue
            mod.children[name] = path + (name,)
            load_module(modules, path + (name,), file, code[m.end():close],
                        os.path.join(dir_for_children, name))
        else:
            pos = m.end()
            if is_test:
                continue
            pm = re.search(r'path\s*=\s*""', attrs)
            if pm:  # #[path] attributes were blanked with the strings; none are used here
                sys.exit(f"{file}: #[path] on `mod {name}` is not supported by this check")
            cand = [os.path.join(dir_for_children, name + ".rs"),
                    os.path.join(dir_for_children, name, "mod.rs")]
            child_file = next((c for c in cand if os.path.isfile(c)), None)
            if child_file is None:
                continue  # cargo will complain; not this check's business
            mod.children[name] = path + (name,)
            with open(child_file, encoding="utf-8") as f:
                child_code = strip_comments_and_literals(f.read())
            base = os.path.basename(child_file)
            child_dir = os.path.dirname(child_file) if base == "mod.rs" else os.path.join(
                os.path.dirname(child_file), name)
            load_module(modules, path + (name,), child_file, child_code, child_dir)
    own.append(code[pos:])
    mod.code = "".join(own)


def resolve(modules, here, segs):
    """The module a path names, following `pub use` re-exports, or None outside the crate."""
    segs = [s.strip() for s in segs]
    if not segs:
        return None
    if segs[0] == "crate":
        cur, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        cur, rest = here, segs
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                if not cur:
                    return None
                cur = cur[:-1]
            rest = rest[1:]
    elif segs[0] in modules[here].children:
        cur, rest = here, segs
    else:
        return None
    for _ in range(8):
        while rest and rest[0] in modules[cur].children:
            cur, rest = modules[cur].children[rest[0]], rest[1:]
        if rest and rest[0] in modules[cur].reexports:
            target = modules[cur].reexports[rest[0]]
            if target is None or target == cur:
                break
            cur, rest = target, rest[1:]
            continue
        break
    return cur


def crate_graph(root_file):
    modules = {}
    with open(root_file, encoding="utf-8") as f:
        code = strip_comments_and_literals(f.read())
    load_module(modules, (), root_file, code, os.path.dirname(root_file))
    for mod in modules.values():
        for m in USE_RE.finditer(mod.code):
            for segs in split_use_tree(m.group(2)):
                mod.uses.append((bool(m.group(1)), segs))
    # Re-exports first (two passes: one may rely on another).
    for _ in range(3):
        for mod in modules.values():
            for is_pub, segs in mod.uses:
                if is_pub and segs and segs[-1] != "*":
                    target = resolve(modules, mod.path, segs[:-1]) if len(segs) > 1 else None
                    if target is not None:
                        mod.reexports[segs[-1]] = target
    edges = {p: set() for p in modules}
    for mod in modules.values():
        paths = [segs for is_pub, segs in mod.uses if not is_pub]
        code_wo_use = USE_RE.sub(" ", mod.code)
        paths += [re.split(r"\s*::\s*", m.group(1)) for m in PATH_RE.finditer(code_wo_use)]
        for segs in paths:
            target = resolve(modules, mod.path, [s for s in segs if s != "*"])
            if target is not None and target != mod.path:
                edges[mod.path].add(target)
    return modules, edges


def sccs(nodes, edges):
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return out


def elementary_cycles(comp, edges):
    """Every simple cycle inside one component, each once (rooted at its smallest node)."""
    comp_set = set(comp)
    found = []
    for start in sorted(comp):
        if len(found) >= MAX_CYCLES_PER_COMPONENT:
            break
        stack = [(start, [start])]
        while stack and len(found) < MAX_CYCLES_PER_COMPONENT:
            v, path = stack.pop()
            for w in sorted(edges[v], reverse=True):
                if w not in comp_set or w < start:
                    continue
                if w == start:
                    found.append(path + [start])
                elif w not in path:
                    stack.append((w, path + [w]))
    return found


def name(path):
    return "::".join(path) if path else "crate"


def crate_roots():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        if "Cargo.toml" not in filenames:
            continue
        with open(os.path.join(dirpath, "Cargo.toml"), encoding="utf-8") as f:
            m = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', f.read(), re.M | re.S)
        if not m:
            continue
        src = os.path.join(dirpath, "src")
        for rel, label in (("lib.rs", "lib"), ("main.rs", "bin")):
            if os.path.isfile(os.path.join(src, rel)):
                yield f"{m.group(1)} ({label})", os.path.join(src, rel)
        bindir = os.path.join(src, "bin")
        if os.path.isdir(bindir):
            for f in sorted(os.listdir(bindir)):
                if f.endswith(".rs"):
                    yield f"{m.group(1)} (bin {f[:-3]})", os.path.join(bindir, f)


def all_cycles():
    lines = []
    for label, root_file in crate_roots():
        modules, edges = crate_graph(root_file)
        for comp in sccs(list(modules), edges):
            if len(comp) < 2:
                continue
            for cyc in elementary_cycles(comp, edges):
                lines.append(f"{label}: " + " -> ".join(name(p) for p in cyc))
    return sorted(set(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", help="cycles tolerated for now, one a line")
    ap.add_argument("--write-baseline", help="write today's cycles to this file and exit 0")
    args = ap.parse_args()
    cycles = all_cycles()
    if args.write_baseline:
        with open(args.write_baseline, "w", encoding="utf-8") as f:
            f.write("# Import cycles tolerated until the modules are split (scripts/check-module-cycles.py).\n"
                    "# Remove a line when its cycle is gone; never add one.\n")
            f.writelines(c + "\n" for c in cycles)
        return 0
    baseline = set()
    if args.baseline:
        with open(args.baseline, encoding="utf-8") as f:
            baseline = {ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")}
    new = [c for c in cycles if c not in baseline]
    stale = sorted(baseline - set(cycles))
    for c in new:
        print(f"import cycle: {c}", file=sys.stderr)
    for c in stale:
        print(f"{args.baseline}: `{c}` is no longer a cycle: remove the line", file=sys.stderr)
    if new:
        print("help: move what both modules need into a module that imports neither, "
              "or let one side take it as a parameter", file=sys.stderr)
    return 1 if new or stale else 0


if __name__ == "__main__":
    sys.exit(main())
