"""`spectral-llava build OUTPUT_DIR`: compose a model dir (modeling_spectral_llava.build.build_model)."""

from spectral_llava.modeling_spectral_llava.tools.options import BuildOptions

from . import add_command, options_of


def run(args) -> None:
    from dataclasses import asdict

    from spectral_llava.modeling_spectral_llava.tools.build import build_model

    build_model(args.output_dir, **asdict(options_of(args, BuildOptions)))


def add_parser(subparsers):
    parser = add_command(subparsers, "build", [BuildOptions], run,
                         help="compose a Spectral-LLaVA model dir from a SpectralGPT tower and an LLM",
                         description="Writes weights, config, tokenizer, processor, chat template, remote code, "
                                     "provenance.json and a model card into OUTPUT_DIR, which then loads anywhere "
                                     "with trust_remote_code=True.")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR")
    return parser
