"""The layering ARCHITECTURE.md promises, checked on the source: no import circles, kernels that know only
tensors, triton imported only where a kernel runs, leaves that stay leaves."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("attention", "harness", "tasks")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """Project modules imported at module level (not inside functions: those are lazy by design)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    edges = {}
    for name, path in files.items():
        targets = {t for t in top_level_imports(path) if t in files}
        # importing a.b.c runs a/__init__ and a/b/__init__ first, except the importer's own packages: they are
        # initialised before any of their modules runs (an explicit import of one is still an edge)
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        parents = {".".join(t.split(".")[:i]) for t in targets for i in range(1, t.count(".") + 1)}
        edges[name] = (targets | (parents - own)) & set(files)
        edges[name].discard(name)
    return edges


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def test_kernels_know_only_tensors():
    for path in (ROOT / "attention" / "kernels").rglob("*.py"):
        text = path.read_text()
        assert "SparsePattern" not in text, f"{path.name} uses SparsePattern"
        assert "attention.executor" not in text and "attention.backend" not in text, path.name


def test_leaves_import_only_the_standard_library():
    for leaf in ("options", "registry"):
        imports = top_level_imports(ROOT / "harness" / f"{leaf}.py")
        assert imports <= {"harness.options", "harness.options.InputError"}, (leaf, imports)


def test_tasks_never_import_torch():
    for path in (ROOT / "tasks").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(n == "torch" or n.startswith("torch.") for n in names), path.name


def test_cpu_paths_run_without_importing_triton():
    code = """
import sys, torch
from attention.registry import available_methods, build_method
q, k, v = torch.randn(1, 4, 130, 16), torch.randn(1, 2, 130, 16), torch.randn(1, 2, 130, 16)
for name in available_methods():
    if name == "flash-attn":
        continue
    build_method(name).prefill(q, k, v, 0.25)
assert "triton" not in sys.modules, "triton imported on a CPU path"
print("ok")
"""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
