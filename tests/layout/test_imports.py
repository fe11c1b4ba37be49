"""The import graph of the project, read with `ast` (top-level and function-level imports, relative ones resolved):
serving code never reaches training or evaluation code, remote code imports only its remote-code siblings,
`spectral_llava.utils` imports nothing of the project, and no modules import each other in a circle."""

import graphlib

import pytest
from layout_graph import PACKAGE_ROOTS, REMOTE_CODE, Project

# everything that serves a model: scene mapping, the web app, the inference room, and the commands that run them
SERVING_PACKAGES = ("spectral_llava.scene", "spectral_llava.webapp", "spectral_llava.inference")
SERVING_COMMANDS = ("spectral_llava.cli.caption", "spectral_llava.cli.classify", "spectral_llava.cli.map",
                    "spectral_llava.cli.app")
TRAINING_OR_EVALUATION = ("spectral_llava.train", "spectral_llava.evaluation")


@pytest.fixture(scope="module")
def project():
    return Project()


def within(name: str, packages) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def describe(project, chain) -> str:
    return " -> ".join(f"{a} (line {project.edges[a][b]})" if b in project.edges[a] else f"{a} (its package)"
                       for a, b in zip(chain, chain[1:])) + f" -> {chain[-1]}"


def test_the_graph_sees_every_kind_of_import(project):
    """Function-level, relative and lazily re-exported imports all count (guards the walk itself)."""
    edges = project.edges
    # function-level: `run` of the caption command imports the inference room's lazy names
    assert "spectral_llava.inference.generation" in edges["spectral_llava.cli.caption"]
    assert "spectral_llava.inference.loading" in edges["spectral_llava.cli.caption"]
    # relative, two levels up
    assert "spectral_llava.modeling_spectral_llava.configuration_spectral_llava" in \
        edges["spectral_llava.modeling_spectral_llava.tools.loading"]
    # a folder installed under another name (package_dir): train/ is spectral_llava.train
    assert "spectral_llava.inference.feature_cache" in edges["spectral_llava.train.data"]
    assert set(PACKAGE_ROOTS.values()) <= set(project.modules)
    # and a forbidden import would be found with its chain
    assert project.import_chain("spectral_llava.cli.quickstart", lambda name: within(name, TRAINING_OR_EVALUATION))


def test_serving_code_never_imports_training_or_evaluation(project):
    serving = [name for name in project.modules if within(name, SERVING_PACKAGES + SERVING_COMMANDS)]
    assert len(serving) > 20
    offenders = [describe(project, chain) for chain in
                 (project.import_chain(name, lambda name: within(name, TRAINING_OR_EVALUATION)) for name in serving)
                 if chain]
    assert offenders == []


def test_the_inference_room_imports_only_what_lies_below_it(project):
    below = ("spectral_llava.inference", "spectral_llava.processing", "spectral_llava.modeling_spectral_llava",
             "spectral_llava.utils")
    assert {name: sorted(target for target in targets if not within(target, below))
            for name, targets in project.edges.items() if within(name, ["spectral_llava.inference"])
            and not all(within(target, below) for target in targets)} == {}


def test_remote_code_imports_only_its_remote_code_siblings(project):
    offenders = []
    for package, names in REMOTE_CODE.items():
        for name in names:
            module = project.modules[f"{package}.{name}"]
            for imported, level, line in module.import_statements():
                dotted = imported if isinstance(imported, str) else ".".join(imported)
                target = project.resolve(module, imported)
                if level == 0 and (dotted.split(".")[0] in PACKAGE_ROOTS or target is not None):
                    offenders.append(f"{module.name} line {line}: absolute import of {dotted}")
                elif level and (level != 1 or target is None or target.rpartition(".")[2] not in names
                                or target.rpartition(".")[0] != package):
                    offenders.append(f"{module.name} line {line}: {dotted} is not a remote-code sibling")
    assert offenders == []


def test_utils_imports_nothing_of_the_project(project):
    utils = [name for name in project.modules if within(name, ["spectral_llava.utils"])]
    assert {"spectral_llava.utils.fileio", "spectral_llava.utils.hub"} <= set(utils)
    assert {name: sorted(project.edges[name]) for name in utils if project.edges[name]} == {}


def test_no_import_cycles(project):
    assert [" -> ".join(loop) for loop in project.cycles()] == []


def room(module: str) -> str:
    """spectral_llava.<room>, with the model tools counted apart from the remote-code model."""
    parts = module.split(".")
    return ".".join(parts[:3] if parts[1:3] == ["modeling_spectral_llava", "tools"] else parts[:2])


def test_no_import_cycles_between_rooms(project):
    rooms = {}
    for module, targets in project.edges.items():
        rooms.setdefault(room(module), set()).update(room(target) for target in targets if room(target) != room(module))
    try:
        graphlib.TopologicalSorter(rooms).prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"rooms import each other in a circle: {' -> '.join(error.args[1])}")
