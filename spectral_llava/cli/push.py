"""`spectral-llava push --model DIR --repo-id ID [--dry-run]`: upload a model dir to the Hugging Face Hub
(modeling_spectral_llava.hub.push_model)."""

from dataclasses import dataclass, field

from . import add_command, options_of


@dataclass
class PushOptions:
    model: str = field(metadata={"help": "the model dir to upload", "metavar": "DIR"})
    repo_id: str = field(metadata={"help": "e.g. your-name/spectral-llava", "metavar": "ID"})
    dry_run: bool = field(default=False, metadata={"help": "list the files that would be uploaded, upload nothing"})
    private: bool = field(default=False, metadata={"help": "create the repo as private"})


def run(args) -> None:
    from spectral_llava.utils.hub import push_model

    options = options_of(args, PushOptions)
    result = push_model(options.model, options.repo_id, dry_run=options.dry_run, private=options.private)
    if result["dry_run"]:
        print(f"dry run: would upload {len(result['files'])} files ({result['bytes'] / 1e6:.1f} MB) from "
              f"{result['folder']} to the model repo {result['repo_id']}:")
        print("\n".join(f"  {path}" for path in result["files"]))
    else:
        print(f"uploaded {len(result['files'])} files to {result['commit_url']}")


def add_parser(subparsers):
    return add_command(subparsers, "push", [PushOptions], run, help="upload a model dir to the Hugging Face Hub",
                       description="Uploads every file of --model (hidden and temporary files excepted) to the Hub "
                                   "model repo --repo-id with huggingface_hub's upload_folder.")
