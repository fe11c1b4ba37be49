"""The shape of the project's code (issue 18): no import circles between its modules or between its rooms, no module
outside tests/ over 500 lines, no function over 80 lines. Imports are read from the source (module level and inside
functions alike, and the lazy `_EXPORTS` of package `__init__` files), so a circle that only closes at run time is
found too."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# repository folder -> import package (setup.cfg package_dir)
PACKAGES = {"spectral_llava": "spectral_llava", "processing": "spectral_llava.processing",
            "modeling_spectral_llava": "spectral_llava.modeling_spectral_llava", "train": "spectral_llava.train"}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def project_modules() -> dict[str, tuple[str, bool]]:
    """{module name: (path, is a package __init__)} of every module of the installed package."""
    modules = {}
    for folder, package in PACKAGES.items():
        root = os.path.join(REPO, folder)
        for directory, _, files in os.walk(root):
            for name in files:
                if not name.endswith(".py"):
                    continue
                parts = os.path.relpath(os.path.join(directory, name), root)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join([package, *parts])] = (os.path.join(directory, name), name == "__init__.py")
    return modules


def imported_modules(name: str, path: str, is_package: bool, modules: dict) -> set[str]:
    """The project modules `name` imports anywhere in its source."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names)
        elif is_package and isinstance(node, ast.Assign) and any(
                getattr(target, "id", None) == "_EXPORTS" for target in node.targets):
            found.update(f"{name}.{value.value}" for value in node.value.values)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_modules(name, path, is_package, modules) for name, (path, is_package) in modules.items()}


def room(module: str) -> str:
    """The room of a module: spectral_llava.<room>, the model tools counted apart from the remote-code model."""
    parts = module.split(".")
    return ".".join(parts[:3] if parts[1:3] == ["modeling_spectral_llava", "tools"] else parts[:2])


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_lazy_and_function_level_imports():
    graph = import_graph()
    assert "spectral_llava.scene.mapping" in graph["spectral_llava.scene"]  # _EXPORTS
    assert "spectral_llava.scene.ray_engine" in graph["spectral_llava.scene.mapping"]  # inside run_engine
    assert "spectral_llava.processing.radiometry_settings" in graph["spectral_llava.processing.radiometry"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles_between_modules():
    assert circles(import_graph()) == []


def test_no_import_circles_between_rooms():
    rooms = {}
    for module, targets in import_graph().items():
        rooms.setdefault(room(module), set()).update(room(target) for target in targets if room(target) != room(module))
    assert circles(rooms) == []


@pytest.mark.parametrize("folder", sorted(PACKAGES) + ["benchmarks", "scripts"])
def test_no_long_modules_or_functions(folder):
    too_long = []
    for directory, _, files in os.walk(os.path.join(REPO, folder)):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            source = open(path, encoding="utf-8").read()
            relative = os.path.relpath(path, REPO)
            if source.count("\n") > MAX_MODULE_LINES:
                too_long.append(f"{relative}: {source.count(chr(10))} lines")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        too_long.append(f"{relative}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []
