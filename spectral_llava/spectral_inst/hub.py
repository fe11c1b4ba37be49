"""Upload a Spectral-Inst build to a Hub dataset repo (the card's `configs` make `load_dataset(repo_id, "patches")`
read the saved Arrow files)."""

from __future__ import annotations

import os
from pathlib import Path

from spectral_llava.utils.hub import push_folder


def push_dataset(output_dir: str | os.PathLike, repo_id: str, dry_run: bool = False, private: bool = False,
                 token: str | None = None, endpoint: str | None = None) -> dict:
    """Upload OUTPUT (without `.work` and temporary files) to the dataset repo `repo_id`; see `push_folder`."""
    if not (Path(output_dir) / "README.md").is_file():
        raise FileNotFoundError(f"{output_dir}: no dataset card README.md; build the dataset before pushing")
    return push_folder(output_dir, repo_id, "dataset", dry_run=dry_run, private=private, token=token,
                       endpoint=endpoint, commit_message="Upload Spectral-Inst (spectral-llava build-dataset)")
