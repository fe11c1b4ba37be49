"""`spectral-llava push --model DIR --repo-id ID [--dry-run]`: upload a model dir to the Hugging Face Hub."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

# never uploaded: hidden files (editor/OS state, temporary files of atomic writes) and temporary dirs
IGNORE_PATTERNS = [".*", "**/.*", "*.tmp", "**/*.tmp"]


def files_to_upload(model_dir: str) -> list[tuple[str, int]]:
    """(relative path, bytes) of every file `upload_folder` would send, filtered by the same patterns."""
    from huggingface_hub.utils import filter_repo_objects

    found = []
    for root, _, names in os.walk(model_dir):
        for name in names:
            found.append(os.path.relpath(os.path.join(root, name), model_dir).replace(os.sep, "/"))
    kept = filter_repo_objects(sorted(found), ignore_patterns=IGNORE_PATTERNS)
    return [(path, os.path.getsize(os.path.join(model_dir, path))) for path in kept]


def push_model(model_dir: str, repo_id: str, dry_run: bool = False, private: bool = False,
               commit_message: str = "Upload Spectral-LLaVA (spectral-llava push)") -> dict:
    """Create the model repo `repo_id` if needed and upload `model_dir` with `HfApi.upload_folder`.

    `dry_run` uploads nothing and returns the file list. Network, authentication and Hub errors are raised as
    RuntimeError naming the repo and the folder.
    """
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"--model {model_dir}: not a model dir (no config.json)")
    if not os.path.isfile(os.path.join(model_dir, "README.md")):
        logger.warning("%s has no README.md: the Hub repo will have no model card", model_dir)
    files = files_to_upload(model_dir)
    plan = {"repo_id": repo_id, "repo_type": "model", "folder": os.path.abspath(model_dir),
            "files": [path for path, _ in files], "bytes": sum(size for _, size in files)}
    if dry_run:
        return {"dry_run": True, **plan}
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=model_dir, repo_id=repo_id, repo_type="model",
                                   ignore_patterns=IGNORE_PATTERNS, commit_message=commit_message)
    except Exception as error:  # offline, network, authentication and Hub errors all end the push alike
        raise RuntimeError(f"push of {model_dir} to {repo_id} failed: {type(error).__name__}: {error}") from error
    return {"dry_run": False, "commit_url": str(getattr(commit, "commit_url", commit)), **plan}


def run(args) -> None:
    try:
        result = push_model(args.model, args.repo_id, dry_run=args.dry_run, private=args.private)
    except RuntimeError as error:
        raise SystemExit(f"spectral-llava push: error: {error}") from None
    if result["dry_run"]:
        print(f"dry run: would upload {len(result['files'])} files ({result['bytes'] / 1e6:.1f} MB) from "
              f"{result['folder']} to the model repo {result['repo_id']}:")
        for path, size in files_to_upload(args.model):
            print(f"  {path}  ({size} bytes)")
    else:
        print(f"uploaded {len(result['files'])} files to {result['commit_url']}")


def add_parser(subparsers):
    parser = subparsers.add_parser("push", help="upload a model dir to the Hugging Face Hub",
                                   description="Uploads every file of --model (hidden and temporary files excepted) "
                                               "to the Hub model repo --repo-id with huggingface_hub.upload_folder.")
    parser.add_argument("--model", required=True, metavar="DIR")
    parser.add_argument("--repo-id", required=True, metavar="ID", help="e.g. your-name/spectral-llava")
    parser.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded, upload nothing")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.set_defaults(func=run)
    return parser
