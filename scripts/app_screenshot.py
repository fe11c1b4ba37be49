"""Screenshot of the web app as the browser test drives it: upload a sample, click Caption, wait for the text.

    python scripts/app_screenshot.py --model quickstart-output/model --output docs/images/app.png

Serves the app on a free 127.0.0.1 port in this process, drives Debian's chromium through playwright
(webapp.browser), and writes a palette PNG (small enough for the README) atomically.
"""

import argparse
import io
import os
import socket
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from PIL import Image  # noqa: E402

from spectral_llava.utils.fileio import write_file_atomically  # noqa: E402
from spectral_llava.webapp import AppOptions, launch  # noqa: E402
from spectral_llava.webapp.browser import browser_page, upload_and_caption  # noqa: E402

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="Spectral-LLaVA model dir")
    parser.add_argument("--image", nargs="+", default=[os.path.join(REPO, "tests", "data", "eurosat-ms", "River",
                                                                    "River_1.tif")],
                        help="file(s) to upload (default: a EuroSAT River patch)")
    parser.add_argument("--output", default=os.path.join(REPO, "docs", "images", "app.png"))
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=960)
    parser.add_argument("--colours", type=int, default=128, help="palette size of the PNG")
    args = parser.parse_args(argv)

    demo, url = launch(AppOptions(model=args.model, port=free_port()), block=False)
    try:
        with browser_page(url, width=args.width, height=args.height) as (page, _):
            caption = upload_and_caption(page, args.image if len(args.image) > 1 else args.image[0])
            page.wait_for_timeout(1500)  # let gradio's fade-in of the updated outputs finish
            png = page.screenshot(full_page=False)
    finally:
        demo.close()
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=args.colours, method=Image.Quantize.MEDIANCUT)
    write_file_atomically(args.output, lambda tmp: image.save(tmp, format="PNG", optimize=True))
    print(f"caption: {caption}\nwrote {args.output} ({os.path.getsize(args.output) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
