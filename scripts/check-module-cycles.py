#!/usr/bin/env python3
"""Fails when a module of a crate imports (through `crate::` or `super::` paths) a module that imports
it back, directly or around a longer circle. Modules are the crate's top-level ones: `a::b` counts as
`a`, and a module's own submodules may use each other. With `--front-ends HOST_SRC` it also fails
when a front-end module of the host crate (FRONT_ENDS) imports another front-end: they call the
layers below, never each other. `--self-test` shows both checks can fail.

Usage: check-module-cycles.py [--front-ends HOST_SRC] CRATE_SRC...
       check-module-cycles.py --self-test"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

# The host crate's front-ends: what clients, platforms and operators talk to.
FRONT_ENDS = ("gamestream", "api", "cli")


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
    """{top module: {top modules it imports}}, and {(from, to): files that import}."""
    deps, where = {}, {}
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
            for u in used - {top}:
                where.setdefault((top, u), set()).add(os.path.relpath(path, src))
    return deps, where


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


def front_end_imports(deps, where):
    """(front-end, the front-end it imports, the files that do), sorted."""
    return [
        (f, g, sorted(where[(f, g)]))
        for f in FRONT_ENDS
        for g in sorted(deps.get(f, ()))
        if g in FRONT_ENDS and g != f
    ]


def self_test():
    """A tiny crate where `api` imports `gamestream` must fail the front-end rule, one without that
    import must pass, and a circle must fail the circle check."""
    me = os.path.abspath(__file__)

    def run(files, *args):
        with tempfile.TemporaryDirectory() as d:
            for rel, text in files.items():
                os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
                with open(os.path.join(d, rel), "w", encoding="utf-8") as f:
                    f.write(text)
            args = [a.replace("SRC", d) for a in args]
            r = subprocess.run([sys.executable, me, *args], capture_output=True, text=True)
            return r.returncode, r.stdout + r.stderr

    base = {
        "lib.rs": "pub mod api;\npub mod cli;\npub mod gamestream;\npub mod state;\n",
        "gamestream/mod.rs": "pub mod handlers;\npub struct HostContext;\n",
        "gamestream/handlers.rs": "use crate::state::Store;\n",
        "state.rs": "pub struct Store;\n",
        "cli.rs": "// crate::api::x in a comment is not an import\nuse crate::state::Store;\n",
    }
    bad = dict(base, **{"api/mod.rs": "use crate::{state, gamestream::HostContext};\n"})
    good = dict(base, **{"api/mod.rs": "use crate::state::Store;\n"})
    circle = dict(good, **{"state.rs": "use crate::api::Thing;\n"})
    failures = []
    rc, out = run(bad, "--front-ends", "SRC", "SRC")
    if rc == 0 or "front-end api imports front-end gamestream (api/mod.rs)" not in out:
        failures.append(f"api importing gamestream must fail (exit {rc}):\n{out}")
    rc, out = run(good, "--front-ends", "SRC", "SRC")
    if rc != 0:
        failures.append(f"front-ends that import only lower layers must pass (exit {rc}):\n{out}")
    rc, out = run(circle, "SRC")
    if rc == 0 or "import circle: api -> state -> api" not in out:
        failures.append(f"a circle must fail (exit {rc}):\n{out}")
    for f in failures:
        print(f"self-test: {f}")
    if failures:
        sys.exit(1)
    print("self-test: the front-end rule and the circle check both fail where they should, and only there")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--front-ends", metavar="HOST_SRC", help="also check the front-end rule on this crate")
    p.add_argument("--self-test", action="store_true")
    p.add_argument("srcs", nargs="*", metavar="CRATE_SRC")
    args = p.parse_args()
    if args.self_test:
        self_test()
        return
    bad = False
    for src in args.srcs:
        for c in cycles(graph(src)[0]):
            bad = True
            print(f"{src}: import circle: {' -> '.join(c)}")
    if args.front_ends:
        for f, g, files in front_end_imports(*graph(args.front_ends)):
            bad = True
            print(f"{args.front_ends}: front-end {f} imports front-end {g} ({', '.join(files)})")
    if bad:
        sys.exit(1)
    checked = f"no import circles between the modules of {', '.join(args.srcs)}"
    if args.front_ends:
        checked += f"; no front-end of {args.front_ends} imports another ({', '.join(FRONT_ENDS)})"
    print(checked)


main()
