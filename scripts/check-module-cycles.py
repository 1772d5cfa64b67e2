#!/usr/bin/env python3
"""Fails when a module of a crate imports (through `crate::` or `super::` paths) a module that imports
it back, directly or around a longer circle. Modules are the crate's top-level ones: `a::b` counts as
`a`, and a module's own submodules may use each other. Usage: check-module-cycles.py CRATE_SRC..."""

import os
import re
import sys


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def brace_heads(text, start):
    """The first identifiers of each top-level item in the `{...}` that opens at `start`."""
    depth, item, heads = 0, "", []
    for c in text[start:]:
        if c == "{":
            depth += 1
            if depth == 1:
                continue
        elif c == "}":
            depth -= 1
            if depth == 0:
                break
        if depth == 1 and c == ",":
            heads.append(item)
            item = ""
        elif depth >= 1:
            item += c
    heads.append(item)
    return [m.group(1) for h in heads if (m := re.match(r"\s*([a-z_][a-z0-9_]*)", h))]


def module_of(rel):
    """`sessions/store.rs` -> ["sessions", "store"]; `lib.rs` -> []."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def graph(src):
    deps = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            mod = module_of(os.path.relpath(path, src))
            if not mod:
                continue
            text = strip_comments(open(path, encoding="utf-8").read())
            used = set()
            for m in re.finditer(r"\bcrate::(\{)?", text):
                if m.group(1):
                    used.update(brace_heads(text, m.end() - 1))
                elif n := re.match(r"([a-z_][a-z0-9_]*)", text[m.end():]):
                    used.add(n.group(1))
            # `super::x` from a.rs at depth 1 is `crate::x`; deeper, it stays inside the module.
            if len(mod) == 1:
                for m in re.finditer(r"\bsuper::([a-z_][a-z0-9_]*)", text):
                    used.add(m.group(1))
            top = mod[0]
            deps.setdefault(top, set()).update(u for u in used if u != top)
    return deps


def cycles(deps):
    found, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(deps.get(n, ())):
            if d not in deps:
                continue
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(deps):
        if n not in state:
            visit(n)
    return found


def main():
    bad = False
    for src in sys.argv[1:]:
        for c in cycles(graph(src)):
            bad = True
            print(f"{src}: import circle: {' -> '.join(c)}")
    if bad:
        sys.exit(1)
    print(f"no import circles between the modules of {', '.join(sys.argv[1:])}")


main()
