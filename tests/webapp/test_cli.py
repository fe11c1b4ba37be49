"""`spectral-llava app`: its arguments, and the real command serving the page on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from spectral_llava.cli import build_parser

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_app_arguments_and_defaults():
    args = build_parser().parse_args(["app", "--model", "m"])
    assert (args.model, args.host, args.port, args.concurrency) == ("m", "127.0.0.1", 7860, 1)
    args = build_parser().parse_args(["app", "--model", "m", "--host", "0.0.0.0", "--port", "9000",
                                      "--max-scene-pixels", "1000000"])
    assert (args.host, args.port, args.max_scene_pixels) == ("0.0.0.0", 9000, 1_000_000)



def test_the_parsed_options_are_the_apps_whole_configuration():
    from spectral_llava.cli import options_of
    from spectral_llava.processing.radiometry_settings import RadiometrySettings
    from spectral_llava.webapp import AppOptions, InputLimits

    args = build_parser().parse_args(["app", "--model", "m", "--max-unpacked-mb", "10", "--work-root", "w",
                                      "--input-offset", "-1000", "--strict"])
    options = options_of(args, AppOptions)
    assert (options.model, options.work_root) == ("m", "w")
    assert options.radiometry == RadiometrySettings(input_offset=-1000, strict=True)
    assert options.limits() == InputLimits(max_unpacked_bytes=10 * 1024 ** 2)
    with pytest.raises(ValueError, match="--max-new-tokens 0: expected a positive integer"):
        AppOptions(model="m", max_new_tokens=0)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


@pytest.mark.slow
def test_command_serves_the_page_and_the_api(app_model_dir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen([sys.executable, "-m", "spectral_llava.cli", "app", "--model", app_model_dir,
                               "--port", str(port)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                page = _get(f"http://127.0.0.1:{port}/").decode()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the app did not start:\n{server.stdout.read()}")
                time.sleep(0.2)
        assert "<title>Spectral-LLaVA</title>" in page or "Spectral-LLaVA" in page
        config = json.loads(_get(f"http://127.0.0.1:{port}/config"))
        public = sorted(d["api_name"] for d in config["dependencies"] if d.get("api_visibility") == "public")
        assert public == ["caption", "classify", "map"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stdout.close()


def test_a_port_in_use_is_one_line_naming_the_flag(caplog):
    """Another server on the port: `spectral-llava app` says so in one line naming --port, before loading the model
    (the model dir here does not exist) and without logging "serving ..." first (issue 20, item 5)."""
    import contextlib
    import io

    from spectral_llava.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), caplog.at_level("INFO"):
            code = main(["app", "--model", "no-such-model-dir", "--port", str(port)])
    assert code == 2
    assert err.getvalue() == (f"spectral-llava app: error: port {port} on 127.0.0.1 is already in use (another app or "
                              f"server); pass --port N with a free port, e.g. --port {port + 1}\n")
    assert "serving" not in caplog.text
