"""README.md and docs/*.md as a newcomer reads them (issue 20): every command a ```bash block shows parses with
the real parser (its sub-command and flags exist), every `spectral-llava` command and every `spectral_llava.` name or
repository path in the text exists, every import of a ```python block resolves, and the ```python blocks marked
`<!-- runnable -->` run as written, with `my-model` and `quickstart-output/model` standing for a tiny model dir."""

import importlib
import os
import re
import shlex
from pathlib import Path

import pytest
from testing_utils import REPO

DOCS = [Path(REPO) / "README.md", *sorted((Path(REPO) / "docs").glob("*.md"))]
RUNNABLE = "<!-- runnable -->"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(path: Path, language: str) -> list[tuple[int, str, bool]]:
    """(line, code, marked runnable) of each fenced block of `language` in `path`."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) == language:
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            found.append((text[:match.start()].count("\n") + 1, match.group(2), before.strip() == RUNNABLE))
    return found


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(words)
    return commands


def check_command(words: list[str]) -> None:
    """Parse a shown command with the parser that would run it; raises (SystemExit or AssertionError) if it would
    not start."""
    from spectral_llava.cli import build_parser

    if words[0] == "spectral-llava":
        build_parser().parse_args(words[1:])
    elif words[:2] == ["accelerate", "launch"]:
        module = words.index("-m") + 1
        if "--config_file" in words:
            assert (Path(REPO) / words[words.index("--config_file") + 1]).is_file(), words
        stage = importlib.import_module(words[module])
        stage_parser(stage).parse_args(words[module + 1:])
    elif words[0] == "python" and words[1] == "-m":
        assert importlib.util.find_spec(words[2]) is not None, words
    elif words[0] == "python":
        assert (Path(REPO) / words[1]).is_file(), words
    elif words[0] == "make":
        targets = re.findall(r"^([\w-]+):", (Path(REPO) / "Makefile").read_text(), re.MULTILINE)
        assert words[1] in targets, words


def stage_parser(stage_module):
    """The argument parser `python -m spectral_llava.train.<stage>` builds."""
    from transformers import HfArgumentParser

    from spectral_llava.modeling_spectral_llava.tools.options import prefer_hyphens
    from spectral_llava.train.options import StagePaths

    stage = next(value for value in vars(stage_module).values() if type(value).__name__ == "Stage")
    return prefer_hyphens(HfArgumentParser((StagePaths, stage.options)))


BASH = [(path, line, words) for path in DOCS for line, code, _ in blocks(path, "bash")
        for words in shell_commands(code)
        if words[0] in ("spectral-llava", "python", "make") or words[:2] == ["accelerate", "launch"]]


@pytest.mark.parametrize("path, line, words", BASH, ids=[f"{p.name}:{line}:{' '.join(w[:3])}" for p, line, w in BASH])
def test_shown_commands_parse(path, line, words):
    try:
        check_command(words)
    except SystemExit as stop:
        pytest.fail(f"{path.name}:{line}: `{' '.join(words)}` does not parse (exit {stop.code})")


def test_commands_and_names_in_the_text_exist():
    """`spectral-llava <command>` anywhere in the text answers --help; `spectral_llava.x.y` names import; repository
    paths exist."""
    from spectral_llava.cli import build_parser

    missing = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for command in set(re.findall(r"spectral-llava ((?:[a-z][\w-]*)(?: (?:align|finetune|linear-probe|tsne|"
                                      r"classify|quality|judge|encoder))?)", text)):
            try:
                build_parser().parse_args([*command.split(), "--help"])
            except SystemExit as stop:
                if stop.code != 0:
                    missing.append(f"{path.name}: spectral-llava {command}")
        for name in set(re.findall(r"\b(spectral_llava(?:\.\w+)+)", text)):
            if not resolves(name):
                missing.append(f"{path.name}: {name}")
        for relative in set(re.findall(r"`((?:processing|modeling_spectral_llava|train|spectral_llava|benchmarks|"
                                       r"scripts|docs)/[\w./-]+\.(?:py|md|yaml|json))`", text)):
            if not (Path(REPO) / relative).exists():
                missing.append(f"{path.name}: {relative}")
    assert missing == []


def resolves(name: str) -> bool:
    """A dotted name is a module, or an attribute of the longest module prefix of it."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                target = getattr(target, attribute)
        except AttributeError:
            return False
        return True
    return False


PYTHON = [(path, line, code, runnable) for path in DOCS for line, code, runnable in blocks(path, "python")]


@pytest.mark.parametrize("path, line, code, runnable", PYTHON, ids=[f"{p.name}:{line}" for p, line, _, _ in PYTHON])
def test_snippet_imports_resolve(path, line, code, runnable):
    for module, names in re.findall(r"^from ([\w.]+) import ([\w, ]+)$", code, re.MULTILINE):
        imported = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(imported, name), f"{path.name}:{line}: {module}.{name}"


@pytest.fixture
def newcomer_cwd(tmp_path, tiny_model_dir, monkeypatch):
    """A fresh folder with the repository's tests/data and train/configs, and `my-model` and
    `quickstart-output/model` as a tiny model dir (a real one takes `spectral-llava build` / `make demo`)."""
    for name in ("tests", "train"):
        (tmp_path / name).symlink_to(Path(REPO) / name)
    (tmp_path / "my-model").symlink_to(tiny_model_dir)
    (tmp_path / "quickstart-output").mkdir()
    (tmp_path / "quickstart-output" / "model").symlink_to(tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("path", [p for p in DOCS if any(r for _, _, r in blocks(p, "python"))], ids=lambda p: p.name)
def test_runnable_snippets_run_as_written(path, newcomer_cwd):
    """The marked ```python blocks of one file, in order, in one namespace (a later block may use an earlier one's
    `pipe` or `processor`)."""
    namespace = {}
    for line, code, runnable in blocks(path, "python"):
        if runnable:
            try:
                exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
            except Exception as error:
                pytest.fail(f"{path.name}:{line}: {type(error).__name__}: {error}")
    assert os.getcwd() == str(newcomer_cwd)
