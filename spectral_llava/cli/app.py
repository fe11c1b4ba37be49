"""`spectral-llava app --model DIR [--host 127.0.0.1] [--port 7860]`: the gradio web app (webapp.launch with
webapp.options.AppOptions)."""

from spectral_llava.webapp.options import AppOptions

from . import add_command, options_of


def run(args) -> None:
    from spectral_llava.webapp import launch

    launch(options_of(args, AppOptions).config(args.model))


def add_parser(subparsers):
    parser = add_command(subparsers, "app", [AppOptions], run, help="serve the web app (gradio) for a model dir")
    parser.add_argument("--model", required=True, metavar="DIR", help="Spectral-LLaVA model directory")
    return parser
