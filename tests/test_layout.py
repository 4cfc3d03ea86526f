"""The house rules of the code's layout, checked mechanically (issue 11).

- no import circle among clear_native's and bench's modules (imports inside functions count too);
- no module of clear_native over 350 lines, no function over 60 lines unless a reason is written
  beside it (a comment `# long:` on its def line);
- bench imports clear_native's public API only (no private module, no underscore name).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("clear_native", "bench")
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60


def _modules() -> dict:
    """Dotted name -> path of every module of the two packages."""
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).glob("*.py"):
            name = pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"
            out[name] = path
    return out


def _imports(name: str, path: Path, known: set) -> set:
    """The modules of ``known`` that ``name`` imports, wherever in the file."""
    pkg = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def _cycle(graph: dict) -> list:
    """One import cycle of ``graph`` (a list of modules), or []."""
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return []

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    mods = _modules()
    # A package's __init__ imports its modules, which import the package for its names: that edge
    # is how packages work, not a circle between modules. Only module-to-module edges count.
    graph = {n: {m for m in _imports(n, p, set(mods)) if m not in PACKAGES} for n, p in mods.items()}
    assert _cycle(graph) == []


def _long_functions(path: Path) -> list:
    lines = path.read_text().splitlines()
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES and "# long:" not in lines[node.lineno - 1]:
                out.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_modules_and_functions_are_short():
    paths = sorted((ROOT / "clear_native").glob("*.py"))
    assert not [f"{p.name}: {len(p.read_text().splitlines())}" for p in paths
                if len(p.read_text().splitlines()) > MAX_MODULE_LINES]
    assert not [f for p in paths + sorted((ROOT / "bench").glob("*.py")) for f in _long_functions(p)]


def test_bench_uses_the_public_api_only():
    bad = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clear_native"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if any(part.startswith("_") for part in node.module.split(".")) or private:
                    bad.append(f"{path.name}:{node.lineno} from {node.module} import {private or '...'}")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and \
                    isinstance(node.value.value, ast.Name) and node.value.value.id == "cn" and \
                    node.value.attr.startswith("_"):
                bad.append(f"{path.name}:{node.lineno} cn.{node.value.attr}.{node.attr}")
    assert bad == []
