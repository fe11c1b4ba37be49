"""Module and function sizes: no module outside tests/ over 500 lines, no function over 80."""

from layout_graph import PACKAGE_ROOTS, REPO, SCRIPT_FOLDERS, Module, module_name, source_files

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def modules():
    for folder in (*PACKAGE_ROOTS, *SCRIPT_FOLDERS):
        for path in source_files(folder):
            name = module_name(path) if folder in PACKAGE_ROOTS else path.stem
            yield Module(name, path)


def long_functions() -> dict[str, int]:
    return {f"{module.path.relative_to(REPO)}:{name}": lines for module in modules()
            for name, lines in module.functions() if lines > MAX_FUNCTION_LINES}


def test_every_source_folder_is_measured():
    measured = {module.path.relative_to(REPO).parts[0] for module in modules()}
    assert measured == {*PACKAGE_ROOTS, *SCRIPT_FOLDERS}


def test_no_module_over_500_lines():
    assert {str(module.path.relative_to(REPO)): module.lines() for module in modules()
            if module.lines() > MAX_MODULE_LINES} == {}


def test_no_function_over_80_lines():
    assert long_functions() == {}

