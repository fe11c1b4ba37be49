"""The one home of atomic file and folder writes: nothing half-written is ever left under its final name.

- `write_file_atomically(path, write)`: `write(tmp_path)` fills a temporary file in the target's folder, then
  `os.replace` moves it onto `path` (atomic within one file system); `atomic_write_bytes` / `_text` / `_json`
  are its common cases. JSON is written strict (RFC 8259): a NaN or infinite float becomes `null` (`strict_json`).
- `replace_dir(staging, target)`: swap a completed folder in place of `target`.
- `write_dir_atomically(save, target)`: run `save(tmp_dir)` and swap the result in only when it completed.

The remote-code pipeline (`processing/pipeline_spectral_llava.py`) keeps its own small writer: it is copied into
saved model dirs and may import nothing from this repository.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def write_file_atomically(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Run `write(tmp_path)` on a temporary file in the folder of `path`, then move it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name ends in the target's extension, for writers that pick a format by it (GDAL's GeoPackage)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; written files should read like any other
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    write_file_atomically(path, lambda tmp: Path(tmp).write_bytes(data))


def copy_file_atomically(source: str | os.PathLike, target: str | os.PathLike) -> None:
    write_file_atomically(target, lambda tmp: shutil.copyfile(source, tmp))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(obj):
    """`obj` with every NaN or infinite float (in dicts, lists and tuples) replaced by None: strict JSON has no NaN,
    and parsers other than Python's (jq, JavaScript's JSON.parse, Go, Rust) refuse a bare `NaN`."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: strict_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(value) for value in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj, indent: int = 1) -> None:
    """Write `obj` as strict JSON (`strict_json`: NaN and infinities become null)."""
    text = json.dumps(strict_json(obj), indent=indent, ensure_ascii=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


def replace_dir(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the completed folder `staging` onto `target`, replacing what was there.

    The old folder is first renamed aside, so `target` is at every moment either the old or the new folder.
    """
    staging, target = Path(staging), Path(target)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def write_dir_atomically(save: Callable[[str], object], target: str | os.PathLike) -> None:
    """Run `save(tmp_dir)` on a fresh folder next to `target` and swap it in only when `save` returned."""
    target = Path(os.path.abspath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        save(tmp_dir)
        os.chmod(tmp_dir, 0o755)  # mkdtemp creates 0700
        replace_dir(tmp_dir, target)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def copy_dir_atomically(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy the folder `source` onto `target`, replacing it, with the same guarantee as `write_dir_atomically`."""
    write_dir_atomically(lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True), target)
