"""`spectral-llava convert-spectralgpt CHECKPOINT OUTPUT_DIR` (modeling_spectral_llava.convert_spectralgpt.convert)."""

from spectral_llava.modeling_spectral_llava.tools.options import ConvertOptions

from . import add_command


def run(args) -> None:
    from spectral_llava.modeling_spectral_llava.tools.convert_spectralgpt import convert

    convert(args.checkpoint, args.output_dir, num_heads=args.num_heads)


def add_parser(subparsers):
    parser = add_command(subparsers, "convert-spectralgpt", [ConvertOptions], run,
                         help="convert an official SpectralGPT checkpoint into a transformers model dir",
                         description="Reads SpectralGPT.pth / SpectralGPT+.pth with torch.load(weights_only=True), "
                                     "keeps the encoder (architecture read off the tensor shapes) and writes an "
                                     "AutoModel-loadable SpectralGPTVisionModel dir.")
    parser.add_argument("checkpoint", help="{'model': state_dict} or a bare state dict")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR")
    return parser
