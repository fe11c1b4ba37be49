"""`spectral-llava app --model DIR [--host 127.0.0.1] [--port 7860]`: the gradio web app (webapp.launch)."""

def run(args) -> None:
    from webapp import AppConfig, InputLimits, launch

    limits = InputLimits()
    limits = InputLimits(max_scene_pixels=args.max_scene_pixels or limits.max_scene_pixels,
                         max_unpacked_bytes=(args.max_unpacked_mb or limits.max_unpacked_bytes // 1024 ** 2) * 1024 ** 2)
    launch(AppConfig(model_dir=args.model, host=args.host, port=args.port, concurrency=args.concurrency,
                     max_new_tokens=args.max_new_tokens, limits=limits, max_upload_mb=args.max_upload_mb))


def add_parser(subparsers):
    parser = subparsers.add_parser("app", help="serve the web app (gradio) for a model dir")
    parser.add_argument("--model", required=True, help="Spectral-LLaVA model directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this "
                                                            "machine only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--concurrency", type=int, default=1,
                        help="model requests run at once; the others wait in gradio's queue (default: 1)")
    parser.add_argument("--max-new-tokens", type=int, default=64,
                        help="tokens generated per answer: caption, labels, chat turn, each mapped tile (default: 64)")
    parser.add_argument("--max-scene-pixels", type=int, default=None,
                        help="refuse inputs whose largest band has more pixels (default: 2048 x 2048)")
    parser.add_argument("--max-upload-mb", type=int, default=1024, help="largest upload accepted (default: 1024)")
    parser.add_argument("--max-unpacked-mb", type=int, default=None,
                        help="largest total size a zip may unpack to (default: 2048)")
    parser.set_defaults(func=run)
    return parser
