"""The package's layers: imports run one way, from the applications down to the model, and never in a circle.

Every `import` counts, including those inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module may import its own layer and the ones below it.
LAYERS = {
    "modernenc.utils": 0,  # neutral helpers: tables, files, "did you mean", hub access, bf16 checks
    "modernenc.model": 1,  # the encoder, its attention backends, Hugging Face interop
    "modernenc.data": 2,  # corpora, shards, masking, packing, tokenizer training
    "modernenc.tasks": 3,  # classification data, metrics, thresholds, batch inference
    "modernenc.train": 4,  # composer: config schema, builders, callbacks, export, tiling
    "modernenc.pv": 5,  # the pharmacovigilance application: ADE data, quickstart, results
    "modernenc.serve": 6,  # the prediction service
    "modernenc.cli": 7,  # the `modernenc` command
}
FACADE = {"modernenc": 1}  # `modernenc/__init__.py` re-exports the model classes


def layer_of(module: str) -> int:
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    if module in FACADE:
        return FACADE[module]
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """The modernenc modules `path` imports, anywhere in it (absolute imports only, as the code uses)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            # `from modernenc.model import attention` imports the submodule when there is one.
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if (root / Path(*candidate.split("."))).with_suffix(".py").is_file():
                    names.append(candidate)
            found.update(n for n in names if n.split(".")[0] == "modernenc")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "modernenc")
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules it imports. `__main__` modules are entry points that start the CLI: left out."""
    return {
        module_name(path, root): imports_of(path, root)
        for path in sorted((root / "modernenc").rglob("*.py"))
        if path.name != "__main__.py"
    }


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a set of modules in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_lower_layers_never_import_higher_ones():
    assert layer_violations(import_graph(SRC)) == []


def test_no_import_circles():
    assert import_cycles(import_graph(SRC)) == []


def test_the_checks_catch_a_planted_violation_and_circle(tmp_path):
    package = tmp_path / "modernenc"
    for folder in ("model", "pv"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "model" / "a.py").write_text("def f():\n    from modernenc.pv import app\n")
    (package / "model" / "b.py").write_text("from modernenc.model import c\n")
    (package / "model" / "c.py").write_text("import modernenc.model.b\n")
    (package / "pv" / "app.py").write_text("from modernenc.model.a import f\n")
    graph = import_graph(tmp_path)
    assert layer_violations(graph) == [
        "modernenc.model.a (layer 1) imports modernenc.pv (layer 5)",
        "modernenc.model.a (layer 1) imports modernenc.pv.app (layer 5)",
    ]
    assert sorted(import_cycles(graph)) == [
        ["modernenc.model.a", "modernenc.pv.app"],
        ["modernenc.model.b", "modernenc.model.c"],
    ]
