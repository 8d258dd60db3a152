"""The import rules of docs/architecture.md, checked on the source: a module imports only from floors below its own
(or its own folder), never an underscore name of another module, and the modules' imports have no cycles. Imports
inside functions count like any other (they are found by walking the whole syntax tree)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "routecraft"
#: docs/architecture.md, "Floors" (datasets/: packaged data and the script that rebuilds it, on the data floor)
FLOORS = {"core": 0, "strategies": 1, "pool": 1, "train": 2, "data": 2, "datasets": 2, "routers": 3,
          "evaluate": 4, "serve": 4, "cli": 5}


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, src: Path = SRC) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names taken from it) for every routecraft import in the file, relative ones
    resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    me = _module_name(path, src)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "routecraft"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "routecraft":
                out.append((node.lineno, mod, [a.name for a in node.names]))
    return out


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None




def test_the_floors_cover_every_folder():
    folders = {_folder(_module_name(p)) for p in SRC.rglob("*.py")} - {None}
    assert folders <= set(FLOORS), f"folders without a floor in docs/architecture.md: {folders - set(FLOORS)}"


def layering_problems(src: Path = SRC) -> list[str]:
    bad = []
    for path in sorted(src.rglob("*.py")):
        me = _module_name(path, src)
        mine = _folder(me)
        for line, mod, names in _imports(path, src):
            theirs = _folder(mod)
            where = f"{path.relative_to(src.parent)}:{line}"
            if mine is not None and theirs is not None and theirs != mine and FLOORS[theirs] >= FLOORS[mine]:
                bad.append(f"{where}: {mine} (floor {FLOORS[mine]}) imports {mod} (floor {FLOORS[theirs]})")
            if mod != me and not (mod.startswith(me + ".") and path.name == "__init__.py"):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    bad.append(f"{where}: takes {', '.join(private)} from {mod}")
    return bad


def import_cycles(src: Path = SRC) -> list[str]:
    modules = {_module_name(p, src): p for p in sorted(src.rglob("*.py"))}

    def resolve(mod: str, names: list[str]) -> set[str]:
        # `from pkg import sub` imports the submodule pkg.sub when it is one
        hits = {f"{mod}.{n}" for n in names if f"{mod}.{n}" in modules}
        return hits | ({mod} if mod in modules and len(hits) < max(1, len(names)) else set())

    graph = {m: set() for m in modules}
    for m, path in modules.items():
        for _, mod, names in _imports(path, src):
            graph[m] |= resolve(mod, names) - {m}
    # a package's __init__ re-exporting its own modules is not a cycle with them: count edges out of __init__
    # into its own subtree only from the modules' side
    for m in modules:
        if modules[m].name == "__init__.py":
            graph[m] = {x for x in graph[m] if not x.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_imports_run_downward_only_and_take_no_underscore_names():
    bad = layering_problems()
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_modules():
    cycles = import_cycles()
    assert not cycles, "import cycles:\n" + "\n".join(cycles[:20])


#: underscore attributes of other libraries' objects, each with why (not routecraft's names)
FOREIGN_PRIVATE = {("routecraft/pool/http.py", "_buffer")}  # asyncio.StreamReader: unread bytes on a kept connection


def private_attribute_uses(src: Path = SRC) -> list[str]:
    """``obj._name`` where ``obj`` is not ``self``/``cls`` or ``_name`` is defined nowhere in the module: another
    module's underscore name used here (a subclass calling its base's underscore method counts: the base's
    module owns it)."""
    bad = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined = set()
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(n.name)
            elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
                defined.add(n.attr)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                defined.add(n.id)
            elif isinstance(n, ast.alias):
                defined.add((n.asname or n.name).split(".")[0])
        rel = str(path.relative_to(src.parent))
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__") \
                    and n.attr not in defined and (rel, n.attr) not in FOREIGN_PRIVATE:
                bad.append(f"{rel}:{n.lineno}: {ast.unparse(n)}")
    return bad


def test_no_other_modules_underscore_attributes():
    bad = private_attribute_uses()
    assert not bad, "\n".join(bad)


def test_the_checks_catch_a_violation(tmp_path):
    """The rules above can fail: a routers module importing the gateway, a private name taken from another module,
    two modules importing each other (inside a function too)."""
    fake = tmp_path / "routecraft"
    for d in ("routers", "serve", "strategies"):
        (fake / d).mkdir(parents=True)
    (fake / "routers" / "bad.py").write_text("from routecraft.serve.gateway import Gateway\n")
    (fake / "routers" / "priv.py").write_text("from routecraft.strategies.base import _check_budget\n")
    (fake / "serve" / "gateway.py").write_text("def f():\n    from routecraft.serve import app\n")
    (fake / "serve" / "app.py").write_text("from routecraft.serve.gateway import f\n")
    (fake / "strategies" / "base.py").write_text("class S:\n    def _call(self):\n        pass\n")
    (fake / "strategies" / "builtin.py").write_text("def run(base):\n    return base._call()\n")
    bad = layering_problems(fake)
    assert bad == ["routecraft/routers/bad.py:1: routers (floor 3) imports routecraft.serve.gateway (floor 4)",
                   "routecraft/routers/priv.py:1: takes _check_budget from routecraft.strategies.base"]
    assert private_attribute_uses(fake) == ["routecraft/strategies/builtin.py:2: base._call"]
    (cycle,) = import_cycles(fake)
    assert set(cycle.split(" -> ")) == {"routecraft.serve.app", "routecraft.serve.gateway"}
