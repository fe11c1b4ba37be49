"""The project's modules read with `ast` (never imported): where each lives, what it imports, how long it is.

A module's imports are every `import` / `from ... import` statement in it, at top level or inside functions;
relative imports are resolved against its package; `from pkg import name` is an import of `pkg.name` when that is a
module, or, for a package whose `__init__` re-exports names lazily through an `_EXPORTS = {name: submodule}` dict,
of the submodule that defines `name`; otherwise of `pkg` itself.
"""

from __future__ import annotations

import ast
from functools import cached_property
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# repository folder -> the import name setup.cfg's package_dir installs it as
PACKAGE_ROOTS = {"spectral_llava": "spectral_llava", "processing": "spectral_llava.processing",
                 "train": "spectral_llava.train", "modeling_spectral_llava": "spectral_llava.modeling_spectral_llava"}
# scripts that are run, not imported: measured for size, not part of the import graph
SCRIPT_FOLDERS = ("benchmarks", "scripts")
SKIPPED_PARTS = {"__pycache__", "static"}
REMOTE_CODE = {
    "spectral_llava.processing": {"sentinel2_io", "sentinel2_bands", "sentinel2_stac", "radiometry",
                                  "radiometry_settings", "image_processing_spectral_llava",
                                  "processing_spectral_llava", "pipeline_spectral_llava"},
    "spectral_llava.modeling_spectral_llava": {"configuration_spectral_llava", "modeling_spectralgpt",
                                               "modeling_spectral_llava"},
}


def source_files(folder: str):
    for path in sorted((REPO / folder).rglob("*.py")):
        if not SKIPPED_PARTS & set(path.relative_to(REPO).parts):
            yield path


def module_name(path: Path) -> str:
    """The import name of a project file, e.g. train/data.py -> spectral_llava.train.data."""
    parts = path.relative_to(REPO).with_suffix("").parts
    name = ".".join((PACKAGE_ROOTS[parts[0]],) + parts[1:])
    return name.removesuffix(".__init__")


class Module:
    def __init__(self, name: str, path: Path):
        self.name, self.path = name, path
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.is_package = path.name == "__init__.py"

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]

    def absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module
        base = self.package.split(".")
        base = base[:len(base) - node.level + 1]
        return ".".join(base + ([node.module] if node.module else []))

    def lazy_exports(self) -> dict[str, str]:
        """{name: submodule} of a package `__init__` that re-exports names lazily (`_EXPORTS`)."""
        for node in self.tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
                return ast.literal_eval(node.value)
        return {}

    def import_statements(self):
        """(imported module name, relative level, line) of every import statement, names unresolved."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, 0, node.lineno
            elif isinstance(node, ast.ImportFrom):
                module = self.absolute(node)
                for alias in node.names:
                    yield (module, alias.name), node.level, node.lineno

    def lines(self) -> int:
        return len(self.path.read_text().splitlines())

    def functions(self):
        """(qualified name, lines) of every function and method, nested ones included."""
        def visit(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        yield name, child.end_lineno - child.lineno + 1
                    yield from visit(child, name + ".")
                else:
                    yield from visit(child, prefix)
        yield from visit(self.tree, "")


class Project:
    """Every module of the installed package, by import name, and the project-internal imports between them."""

    def __init__(self):
        self.modules = {}
        for folder in PACKAGE_ROOTS:
            for path in source_files(folder):
                module = Module(module_name(path), path)
                self.modules[module.name] = module

    def resolve(self, module: Module, imported) -> str | None:
        """The project module that an import statement loads, or None for an import from outside the project."""
        if isinstance(imported, str):
            return imported if imported in self.modules else None
        package, name = imported
        if f"{package}.{name}" in self.modules:
            return f"{package}.{name}"
        if package not in self.modules:
            return None
        lazy = self.modules[package].lazy_exports()
        return f"{package}.{lazy[name]}" if name in lazy else package

    @cached_property
    def edges(self) -> dict[str, dict[str, int]]:
        """{module: {imported project module: line of the first such import}}."""
        edges = {}
        for name, module in self.modules.items():
            edges[name] = {}
            for imported, _, line in module.import_statements():
                target = self.resolve(module, imported)
                if target is not None and target != name:
                    edges[name].setdefault(target, line)
        return edges

    def loaded_with(self, name: str) -> set[str]:
        """`name`'s parent packages: importing it runs their `__init__` first."""
        parts = name.split(".")
        return {".".join(parts[:k]) for k in range(1, len(parts))} & set(self.modules)

    def import_chain(self, start: str, forbidden) -> list[str] | None:
        """The shortest chain of imports from `start` to a module for which `forbidden(name)` holds, counting the
        parent packages each import runs, or None."""
        previous, frontier = {start: None}, [start]
        while frontier:
            following = []
            for name in frontier:
                if forbidden(name):
                    chain = [name]
                    while previous[chain[-1]] is not None:
                        chain.append(previous[chain[-1]])
                    return chain[::-1]
                for target in sorted(set(self.edges[name]) | self.loaded_with(name)):
                    if target not in previous:
                        previous[target] = name
                        following.append(target)
            frontier = following
        return None

    def cycles(self) -> list[list[str]]:
        """Each group of modules that import each other (directly or around a loop), as one loop through it."""
        index, low, stack, on_stack, groups = {}, {}, [], set(), []

        def connect(name):  # Tarjan's strongly connected components
            index[name] = low[name] = len(index)
            stack.append(name)
            on_stack.add(name)
            for target in self.edges[name]:
                if target not in index:
                    connect(target)
                    low[name] = min(low[name], low[target])
                elif target in on_stack:
                    low[name] = min(low[name], index[target])
            if low[name] == index[name]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == name:
                        break
                if len(group) > 1:
                    groups.append(group)

        for name in sorted(self.modules):
            if name not in index:
                connect(name)
        return [self.loop_through(group) for group in groups]

    def loop_through(self, group: set[str]) -> list[str]:
        """One import loop inside a strongly connected group, starting and ending at its first module."""
        start = min(group)
        previous, frontier = {}, [start]
        while frontier:
            following = []
            for name in frontier:
                for target in sorted(self.edges[name]):
                    if target == start:
                        chain = [name]
                        while chain[-1] != start:
                            chain.append(previous[chain[-1]])
                        return chain[::-1] + [start]
                    if target in group and target not in previous:
                        previous[target] = name
                        following.append(target)
            frontier = following
        raise AssertionError(f"no loop through {sorted(group)}")
