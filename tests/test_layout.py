"""The folder layout is the architecture: data flows one way and nothing imports upward.

Layers, lowest first: data -> models -> rewards / rollout / feedback -> losses -> trainers ->
evaluation -> pipeline / cli. The embedded world (toy model, task, gold, simulated labelers) is
one room that only the demo, the CLI's defaults and tests depend on."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rlhf"

# package (first part under rlhf) -> what it must never import
FORBIDDEN = {
    "atomic_io": {"*"},
    "progress": {"*"},
    "config": {"embedded", "feedback", "trainers", "pipeline", "evaluation", "rewards", "rollout", "cli"},
    "data": {"embedded", "feedback", "trainers", "pipeline", "evaluation", "rewards", "rollout", "models", "cli"},
    "models": {"embedded", "feedback", "trainers", "pipeline", "evaluation", "rewards", "rollout", "cli"},
    "rl_math": {"embedded", "feedback", "trainers", "pipeline", "evaluation", "rewards", "cli"},
    "kl_control": {"embedded", "feedback", "trainers", "pipeline", "evaluation", "rewards", "cli"},
    "losses": {"embedded", "feedback", "trainers", "pipeline", "evaluation", "rewards", "cli"},
    "rollout": {"embedded", "feedback", "trainers", "pipeline", "evaluation", "rewards", "cli"},
    "rewards": {"embedded", "feedback", "trainers", "pipeline", "evaluation", "cli"},
    "feedback": {"embedded", "trainers", "pipeline", "evaluation", "cli"},
    "trainers": {"embedded", "feedback", "pipeline", "cli"},
    "evaluation": {"embedded", "feedback", "pipeline", "cli"},
    "embedded": {"trainers", "pipeline", "evaluation", "cli"},
}


def rlhf_imports(path: Path) -> set[str]:
    """The first component after ``rlhf.`` of every rlhf module ``path`` imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found |= {name.split(".")[1] for name in names if name.startswith("rlhf.") and "." in name}
        if isinstance(node, ast.ImportFrom) and node.module == "rlhf":
            found |= {alias.name for alias in node.names}
    return found


def modules():
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_upward(path):
    layer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    forbidden = FORBIDDEN.get(layer, set())
    imported = rlhf_imports(path) - {layer}
    bad = imported if "*" in forbidden else imported & forbidden
    assert not bad, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(bad)}"


def test_no_file_is_over_600_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in modules() if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from rlhf.embedded.task import KINDS\n    import rlhf.pipeline.demo\n")
    assert rlhf_imports(bad) == {"embedded", "pipeline"}
