"""The package layout rules: no private module imported from another package, no import cycles at import time,
and ``otsr`` importable without the sweep stack (the GPU machine has only torch)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("otsr", "sweep")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _nodes(tree: ast.Module, anywhere: bool):
    """Module-level statements, or every import statement in the file (functions too), minus TYPE_CHECKING blocks."""
    if not anywhere:
        yield from (n for n in tree.body if not isinstance(n, ast.If))
        return
    skip = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            skip |= {id(c) for c in ast.walk(n)}
    yield from (n for n in ast.walk(tree) if id(n) not in skip)


def _top_level_imports(path: Path, name: str, known: set[str], anywhere: bool = False) -> set[str]:
    """Project modules ``path`` imports: at import time (module-level statements), or ``anywhere`` (deferred
    imports inside functions too)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in _nodes(ast.parse(path.read_text()), anywhere):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = ".".join(base[:len(base) - node.level + 1] + ([mod] if mod else []))
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def test_no_private_module_is_imported_from_another_package():
    known = _modules()
    offences = []
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            for mod in mods:
                parts = mod.split(".")
                private = [i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")]
                if private and mod in known:
                    owner = ".".join(parts[:private[0]])
                    if not name.startswith(owner + ".") and name != owner:
                        offences.append(f"{name} imports {mod}")
    assert not offences, offences


def _cycles(anywhere: bool) -> list[list[str]]:
    known = _modules()
    graph = {name: _top_level_imports(path, name, set(known), anywhere) for name, path in known.items()}
    # a package's __init__ importing its own submodules is how packages work, not a cycle to fix
    for name in graph:
        graph[name] = {d for d in graph[name] if not name.startswith(d + ".")}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def _package_of(name: str) -> str:
    """The unit a deferred cycle is judged at: a subpackage (otsr.pairs, otsr.sr, ...) or a top-level module."""
    parts = name.split(".")
    return ".".join(parts[:2])


def test_no_import_cycles():
    assert not _cycles(anywhere=False)


def test_no_import_cycles_even_through_deferred_imports():
    """An import inside a function hides a cycle from import time, not from the design: none between modules,
    and none between subpackages (otsr.state -> otsr.sr -> otsr.state was one)."""
    assert not _cycles(anywhere=True)
    known = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        deps = {_package_of(d) for d in _top_level_imports(path, name, set(known), anywhere=True)}
        graph.setdefault(_package_of(name), set()).update(deps - {_package_of(name)})
    graph["otsr"] = set()  # the package's lazy front door may name anything
    cycles = []

    def visit(node, stack, seen):
        for dep in sorted(graph.get(node, ())):
            if dep in stack:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in seen:
                seen.add(dep)
                visit(dep, stack + [dep], seen)

    for node in graph:
        visit(node, [node], {node})
    assert not cycles, sorted({" -> ".join(c) for c in cycles})[:10]


def test_otsr_imports_without_the_sweep_stack():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, *a):\n"
            "        if name.split('.')[0] in ('ray', 'optuna', 'mlflow', 'yaml', 'sweep'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import otsr, otsr.cli, otsr.solving, otsr.trainers, otsr.sr.pair, otsr.bench\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_no_method_is_compared_by_name_outside_its_module():
    """Outside otsr/methods/ code reads a method's declared role (swept / reference), never its name."""
    pattern = re.compile(r"""(==|!=) ?["'](ots|gan)["']|["'](ots|gan)["'] ?(==|!=)"""
                         r"""|for \w+ in \(["'](ots|gan)["'], ?["'](ots|gan)["']\)""")
    offences = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                if "methods" not in p.relative_to(ROOT).parts
                for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offences, offences
