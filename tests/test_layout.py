"""The import graph of the packages: no cycles, and the stages depend on astuner only.

Every import counts: at module level, under TYPE_CHECKING and inside functions, read with `ast`
(nothing is imported). A package's own __init__ running first is not an edge.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("astuner", "collect", "judge", "finetune", "ajet", "agentscope_tuner")
STAGES = ("collect", "judge", "finetune")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of PACKAGES it imports (`from a.b import c` is a.b.c when that is a module, else a.b)."""
    files = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in files.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package
                    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}".strip(".")
                imported.update(f"{base}.{alias.name}" for alias in node.names)
        graph[module] = {target for name in imported if (target := known(name)) not in (None, module)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (a depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(module: str, path: list[str]) -> list[str] | None:  # path: the open modules, `module` last
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target, path + [target])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_the_graph_reads_every_kind_of_import():
    graph = import_graph()
    assert "astuner.compat.agentscope_tuner" in graph["astuner"]  # module level, in a package __init__
    assert "astuner.tuner" in graph["astuner.openai_endpoint"]  # under TYPE_CHECKING
    assert "judge.llm" in graph["judge.judgers"]  # inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_stages_depend_on_astuner_only():
    graph = import_graph()
    crossing = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if module.split(".")[0] in STAGES
        and target.split(".")[0] in STAGES
        and target.split(".")[0] != module.split(".")[0]
    )
    assert not crossing, "a stage imports another stage: " + ", ".join(crossing)
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if module.split(".")[0] == "astuner" and target.split(".")[0] != "astuner"
    )
    assert not upward, "astuner imports a stage or an alias package: " + ", ".join(upward)
