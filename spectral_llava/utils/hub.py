"""The one Hugging Face Hub upload: a model dir (`spectral-llava push`) or a Spectral-Inst build (`--push-to-hub`);
and the one test of whether a name is a Hub repo id (`is_hub_id`)."""

from __future__ import annotations

import logging
import os
import re

logger = logging.getLogger(__name__)

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

# never uploaded: hidden files and folders (editor/OS state, the builder's .work cache, temporary files of atomic
# writes); fnmatch's `*` also matches `/`, so ".*" covers everything under a hidden top-level folder
IGNORE_PATTERNS = [".*", "**/.*", "*.tmp", "**/*.tmp"]


def is_hub_id(spec) -> bool:
    """`ORG/NAME` that is not an existing local path."""
    return isinstance(spec, str) and HUB_ID.fullmatch(spec) is not None and not os.path.exists(spec)


def files_to_upload(folder: str | os.PathLike) -> list[tuple[str, int]]:
    """(relative path, bytes) of every file `upload_folder` would send, filtered by the same patterns."""
    from huggingface_hub.utils import filter_repo_objects

    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/") for name in names]
    kept = filter_repo_objects(sorted(found), ignore_patterns=IGNORE_PATTERNS)
    return [(path, os.path.getsize(os.path.join(folder, path))) for path in kept]


def push_folder(folder: str | os.PathLike, repo_id: str, repo_type: str, *, dry_run: bool = False,
                private: bool = False, commit_message: str | None = None, token: str | None = None,
                endpoint: str | None = None) -> dict:
    """Create the Hub repo `repo_id` if needed and upload `folder` with `HfApi.upload_folder` (hidden and temporary
    files excepted; large folders go up in several resumable commits through hf_xet).

    Returns the plan (repo, folder, files, bytes); `dry_run` uploads nothing. Network, authentication and Hub errors
    are raised as RuntimeError naming the repo and the folder.
    """
    folder = os.path.abspath(folder)
    files = files_to_upload(folder)
    plan = {"repo_id": repo_id, "repo_type": repo_type, "private": private, "folder": folder,
            "ignore_patterns": IGNORE_PATTERNS, "files": [path for path, _ in files],
            "bytes": sum(size for _, size in files)}
    if dry_run:
        logger.info("dry run: would upload %d files (%d bytes) from %s to the %s repo %s", len(files), plan["bytes"],
                    folder, repo_type, repo_id)
        return {"dry_run": True, **plan}
    from huggingface_hub import HfApi

    api = HfApi(token=token, endpoint=endpoint)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type=repo_type,
                                   ignore_patterns=IGNORE_PATTERNS,
                                   commit_message=commit_message or f"Upload {os.path.basename(folder)}")
    except Exception as error:  # offline, network, authentication and Hub errors all end the push alike
        raise RuntimeError(f"push of {folder} to {repo_id} failed: {type(error).__name__}: {error}") from error
    return {"dry_run": False, "commit_url": str(getattr(commit, "commit_url", commit)), **plan}


def push_model(model_dir: str | os.PathLike, repo_id: str, dry_run: bool = False, private: bool = False,
               commit_message: str = "Upload Spectral-LLaVA (spectral-llava push)") -> dict:
    """Upload a saved model dir to the Hub model repo `repo_id` (see `push_folder`)."""
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"--model {model_dir}: not a model dir (no config.json)")
    if not os.path.isfile(os.path.join(model_dir, "README.md")):
        logger.warning("%s has no README.md: the Hub repo will have no model card", model_dir)
    return push_folder(model_dir, repo_id, "model", dry_run=dry_run, private=private, commit_message=commit_message)
