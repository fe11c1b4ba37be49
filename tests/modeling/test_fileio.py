"""The one atomic-write module: complete files or folders appear under their final name, or nothing changes."""

import json
import os
from pathlib import Path

import pytest

from spectral_llava.utils.fileio import (atomic_write_json, atomic_write_text, copy_dir_atomically,
                                            copy_file_atomically, write_dir_atomically, write_file_atomically)


def test_files_are_written_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"b": [1, 2], "text": "Ø"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"b": [1, 2], "text": "Ø"}
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)

    def fail_half_way(tmp):
        with open(tmp, "w") as handle:
            handle.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_file_atomically(target, fail_half_way)
    assert json.loads(target.read_text(encoding="utf-8"))["b"] == [1, 2]  # the old content survives
    assert os.listdir(target.parent) == ["a.json"]  # and no temporary file is left

    seen = []
    write_file_atomically(tmp_path / "tiles.gpkg", lambda tmp: (seen.append(tmp), open(tmp, "w").close()))
    # hidden, beside the target, with its extension (GDAL's GeoPackage driver warns about any other)
    assert os.path.dirname(seen[0]) == str(tmp_path) and os.path.basename(seen[0]).startswith(".tiles.gpkg.")
    assert seen[0].endswith(".tmp.gpkg") and not os.path.exists(seen[0])

    atomic_write_text(target, "new")
    copy_file_atomically(target, tmp_path / "copy.txt")
    assert (tmp_path / "copy.txt").read_text() == "new"


def test_folders_are_swapped_in_only_when_complete(tmp_path):
    target = tmp_path / "model"

    def save(folder):
        for name in ("config.json", "weights.bin"):
            Path(os.path.join(folder, name)).write_text(name)

    write_dir_atomically(save, target)
    assert sorted(os.listdir(target)) == ["config.json", "weights.bin"]

    def crash(folder):
        Path(os.path.join(folder, "config.json")).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dir_atomically(crash, target)
    assert (target / "config.json").read_text() == "config.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left behind

    copy_dir_atomically(target, tmp_path / "copy")
    assert sorted(os.listdir(tmp_path / "copy")) == ["config.json", "weights.bin"]
    assert oct((tmp_path / "copy").stat().st_mode & 0o777) == oct(0o755)


def test_json_is_written_strict(tmp_path):
    """NaN and infinities (no value, e.g. a recall without labels) are written as null, which strict parsers read."""
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"recall": float("nan"), "rows": [float("inf"), 0.5, (float("-inf"), 1)], "n": 2})
    text = target.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "recall": None, "rows": [None, 0.5, [None, 1]], "n": 2}
