"""The project's modules import each other one way: no cycle, and envs.py imports none of them."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = {p.stem: p for p in REPO.glob("*.py")}


def project_imports(path):
    """The project modules that `path` imports, at its top level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(MODULES) - {path.stem}


def test_imports_form_no_cycle_and_envs_imports_nothing_of_ours():
    graph = {name: project_imports(path) for name, path in MODULES.items()}
    assert graph["envs"] == set()
    assert "step" not in set().union(*graph.values())  # the command line is imported by nobody
    order, done = [], set()

    def visit(name, stack):
        assert name not in stack, f"import cycle: {' -> '.join([*stack, name])}"
        if name not in done:
            for dependency in sorted(graph[name]):
                visit(dependency, [*stack, name])
            done.add(name)
            order.append(name)
    for name in sorted(graph):
        visit(name, [])
    assert order.index("envs") < order.index("rollout") < order.index("pipeline") < order.index("step")
    assert order.index("data") < order.index("train") < order.index("pipeline")
