"""What a built wheel installs, and that a user's own generic-named files cannot shadow the package."""

import configparser
import fnmatch
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from layout_graph import PACKAGE_ROOTS, REPO

BUILD_FILES = ("setup.cfg", "pyproject.toml", "README.md")
PACKAGE_DATA = ["train/configs/*.yaml", "spectral_llava/webapp/static/leaflet/*",
                "modeling_spectral_llava/tools/*.md"]


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config


def installed_name(folder: Path) -> str:
    """The import name setup.cfg installs a repository folder as, e.g. train/configs -> spectral_llava.train.configs."""
    parts = folder.relative_to(REPO).parts
    return ".".join((PACKAGE_ROOTS[parts[0]],) + parts[1:])


def package_folders() -> list[Path]:
    return sorted(path.parent for root in PACKAGE_ROOTS for path in (REPO / root).rglob("__init__.py")
                  if "__pycache__" not in path.parts)


def wheel_path(path: Path) -> str:
    return installed_name(path.parent).replace(".", "/") + "/" + path.name


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel `pip wheel` builds from a copy of the repository's packaging files and package folders (a build in
    place would leave build/ and egg-info behind in the checkout)."""
    source, dist = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in BUILD_FILES:
        shutil.copy(REPO / name, source / name)
    for root in PACKAGE_ROOTS:
        shutil.copytree(REPO / root, source / root, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(dist), str(source)], check=True, capture_output=True, timeout=600)
    (built,) = dist.glob("spectral_llava-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def test_the_wheel_installs_one_import_name(wheel):
    top_level = {name.split("/")[0].removesuffix(".py") for name in wheel.namelist()
                 if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == {"spectral_llava"}


def test_every_package_folder_is_listed_in_setup_cfg_and_installed(wheel):
    listed = set(setup_cfg()["options"]["packages"].split())
    folders = {installed_name(folder) for folder in package_folders()}
    assert {"spectral_llava.inference", "spectral_llava.modeling_spectral_llava.tools"} <= folders
    assert folders - listed == set()
    assert listed - folders == set()
    modules = [path for folder in package_folders() for path in folder.glob("*.py")]
    assert sorted(wheel_path(path) for path in modules if wheel_path(path) not in wheel.namelist()) == []


def test_no_python_file_sits_outside_a_package():
    """A folder of .py files without __init__.py would be silently left out of the wheel."""
    folders = set(package_folders())
    stray = {str(path.relative_to(REPO)) for root in PACKAGE_ROOTS for path in (REPO / root).rglob("*.py")
             if "__pycache__" not in path.parts and path.parent not in folders}
    assert stray == set()


def test_the_package_data_is_installed(wheel):
    data = [path for pattern in PACKAGE_DATA for path in REPO.glob(pattern) if path.is_file()]
    assert any(fnmatch.fnmatch(path.name, "*.yaml") for path in data)
    assert any(path.name == "leaflet.js" for path in data)
    assert any(path.suffix == ".md" for path in data)
    assert sorted(wheel_path(path) for path in data if wheel_path(path) not in wheel.namelist()) == []


SHADOWS = ("train", "scene", "processing", "evaluation", "inference", "webapp", "cli", "utils")


@pytest.mark.slow
def test_a_users_own_modules_shadow_nothing(tmp_path):
    """A working directory holding a user's train.py, scene.py, ... (each refusing to be imported) changes nothing:
    the project only imports `spectral_llava.*`."""
    for name in SHADOWS:
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('the user\\'s own {name}.py was imported')\n")
    script = Path(sys.executable).parent / "spectral-llava"
    env = {**os.environ, "PYTHONPATH": ""}
    shadowed = subprocess.run([sys.executable, "-c", "import train"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
    assert "the user's own train.py was imported" in shadowed.stderr  # the trap works
    runs = {"console script": [str(script), "--help"],
            "python -m": [sys.executable, "-m", "spectral_llava.cli", "classify", "--help"],
            "imports": [sys.executable, "-c", "import spectral_llava.scene, spectral_llava.train, "
                        "spectral_llava.processing, spectral_llava.scene.mapping, spectral_llava.train.trainer, "
                        "spectral_llava.webapp.model, spectral_llava.evaluation.classification; print('imported')"]}
    outputs = {}
    for run, command in runs.items():
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (run, done.stderr[-2000:])
        outputs[run] = done.stdout
    assert "classify" in outputs["console script"] and "caption" in outputs["console script"]
    assert "--resize-whole-image" in outputs["python -m"]
    assert outputs["imports"] == "imported\n"
