"""`spectral-llava app --model DIR [--host 127.0.0.1] [--port 7860]`: the gradio web app (webapp.launch with
webapp.options.AppOptions, its whole configuration)."""

from spectral_llava.webapp.options import AppOptions

from . import add_command, options_of


def run(args) -> None:
    from spectral_llava.webapp import launch

    launch(options_of(args, AppOptions))


def add_parser(subparsers):
    return add_command(subparsers, "app", [AppOptions], run, help="serve the web app (gradio) for a model dir")
