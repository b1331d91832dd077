#!/usr/bin/env python3
"""Fails when a comment or a Markdown file cites a file that is not in the repository.

It reads every tracked file: in Rust, the `//`, `///` and `//!` comments; in Makefiles, shell,
Python, TOML and YAML, the `#` comments; Markdown files whole (links and code spans). A cited
path (`docs/policy.md`, `ruleset/FORMAT.md`, `src/cert.rs`, `mk/e2e.mk`, `[x](../README.md)`)
must exist relative to the citing file's folder, one of its parent folders (so a crate's
`src/x.rs` resolves from inside the crate) or the repository root. A bare document name
(`FORMAT.md`) must be the name of some file in the repository: notes kept elsewhere are not
something a reader of the repository can open (ARCHITECTURE.md is).

Not checked: URLs, absolute paths (system files such as /usr/bin/chromium), paths with
placeholders or globs (`<name>`, `*`, `{a,b}`, `$VAR`), and build outputs under `target/` or
`.tools/`.

Usage: scripts/check-file-refs.py        Exit codes: 0 all found, 1 missing references.
Python 3 standard library only.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a cited file looks like: a path (or bare name) ending in a source or document extension.
EXTS = "md|rs|mk|sh|py|toml|ya?ml|json|txt|mjs|js|html|css|pem|der|crl|cgt|snap|lock|wasm"
REF_RE = re.compile(r"(?<![\w/.$<{*@-])((?:\.{1,2}/)*[\w.-]+(?:/[\w.-]+)*\.(?:%s))(?![\w/*-]|\.\w)" % EXTS)
LINK_RE = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
URL_RE = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
# Extensions of the repository's own files; a bare name (no folder) is checked only for
# sources and documents, since `payments.yaml` or `web.pem` in prose is the reader's file.
REPO_EXTS = {"md", "rs", "mk", "sh", "py", "toml", "yaml", "yml", "mjs", "js", "html", "css", "snap", "txt"}
BARE_EXTS = {"md", "rs", "mk", "sh", "py", "mjs"}
# The repository's top-level folders (filled in by main).
TOP_DIRS = set()
HASH_COMMENT = {".mk", ".sh", ".py", ".toml", ".yaml", ".yml", ".txt", ""}
# Build outputs and generated files a comment may name before they exist.
OUTPUT_PREFIXES = ("target/", ".tools/", "tgt/")


def comment_text(path, text):
    """The part of the file that is prose: comments, or the whole of a Markdown file."""
    ext = os.path.splitext(path)[1]
    base = os.path.basename(path)
    if ext == ".md":
        return text
    if ext in (".rs", ".js", ".mjs"):
        lines = []
        for line in text.splitlines():
            m = re.search(r"//+!?(.*)", line)
            lines.append(m.group(1) if m else "")
        return "\n".join(lines)
    if ext in HASH_COMMENT or base in ("Makefile", "Dockerfile", ".gitignore"):
        lines = []
        for line in text.splitlines():
            m = re.search(r"(?:^|\s)#(?![\[{!])(.*)", line)
            lines.append(m.group(1) if m else "")
        return "\n".join(lines)
    return ""


def exists(rel, citing_dir, tracked_dirs, tracked):
    d = citing_dir
    while True:
        cand = os.path.normpath(os.path.join(d, rel))
        if cand in tracked or cand in tracked_dirs:
            return True
        if d in ("", "."):
            return False
        d = os.path.dirname(d)


def is_placeholder(part):
    """`X`, `NAME`, `DIR`: a word in capitals stands for a name the reader picks."""
    stem = part.split(".")[0]
    return bool(re.fullmatch(r"[A-Z_]+", stem)) and part.count(".") != 1 or stem in ("X", "NAME")


def checked(ref, dir_names):
    """Whether `ref` claims to be a file of this repository (rather than an example of the
    reader's own files, a host name, a MIME type or a file made at run time)."""
    ext = ref.rsplit(".", 1)[-1]
    parts = ref.split("/")
    if ref.startswith(OUTPUT_PREFIXES) or "/target/" in ref or any(is_placeholder(p) for p in parts):
        return False
    if len(parts) > 1 and parts[0] in TOP_DIRS:  # any kind of file under a folder of ours
        return True
    if ext not in REPO_EXTS:
        return False
    if len(parts) == 1:
        return ext in BARE_EXTS
    first = parts[0]
    if first in (".", ".."):
        return True
    return "." not in first and first in dir_names


def main():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    files = [f for f in files if f]
    tracked = set(files)
    tracked_dirs = set()
    for f in files:
        d = os.path.dirname(f)
        while d and d not in tracked_dirs:
            tracked_dirs.add(d)
            d = os.path.dirname(d)
    dir_names = {os.path.basename(d) for d in tracked_dirs}
    TOP_DIRS.update(d for d in tracked_dirs if "/" not in d)
    basenames = {os.path.basename(f) for f in files}
    problems = []
    for f in files:
        full = os.path.join(ROOT, f)
        if not os.path.isfile(full) or f.endswith((".snap", ".lock")) or "/fixtures/" in f:
            continue
        try:
            with open(full, encoding="utf-8") as fh:
                text = fh.read()
        except UnicodeDecodeError:
            continue
        prose = comment_text(f, text)
        if not prose:
            continue
        citing_dir = os.path.dirname(f)
        fenced = False
        for lineno, line in enumerate(prose.splitlines(), 1):
            if f.endswith(".md") and line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            if fenced:  # examples of commands and the reader's files
                continue
            line = URL_RE.sub(" ", line)
            refs = set(REF_RE.findall(line))
            if f.endswith(".md"):
                links = {r for r in LINK_RE.findall(line) if not r.startswith(("mailto:", "/"))}
                refs -= links
                for r in links:
                    if not exists(r, citing_dir, tracked_dirs, tracked):
                        problems.append(f"{f}:{lineno}: links to `{r}`, which does not exist")
            for ref in sorted(refs):
                if not checked(ref, dir_names):
                    continue
                if "/" not in ref and ref in basenames:
                    continue
                if not exists(ref, citing_dir, tracked_dirs, tracked):
                    problems.append(f"{f}:{lineno}: cites `{ref}`, which does not exist")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
