"""Drive the app in a real headless Chromium (Debian's `chromium`, through playwright's Python API).

Used by the browser tests and `scripts/app_screenshot.py`. playwright cannot download its own browser builds
here, so the system Chromium is launched by path with flags that keep it from calling home.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from urllib.parse import urlparse

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
LOCAL_SCHEMES = ("data", "blob", "about")


def chromium_path() -> str | None:
    """The system Chromium (`CHROMIUM` environment variable, else `chromium` on PATH), or None."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and os.access(path, os.X_OK) else None


@contextmanager
def browser_page(base_url: str, width: int = 1280, height: int = 900, ready: str | None = "#upload"):
    """(page, requests) on a fresh Chromium at `base_url`, once the `ready` element shows (the app's upload box);
    `requests` collects every URL the page asks for, so callers can check that nothing left `base_url`'s host."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError("no chromium found: `apt-get install -y chromium` (make setup does it)")
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(base_url, wait_until="load")
            if ready:
                page.locator(ready).wait_for()
            yield page, requests
        finally:
            browser.close()


def foreign_requests(requests: list[str], base_url: str) -> list[str]:
    """The requested URLs that went to another host than the app's (data:/blob: URLs are local)."""
    host = urlparse(base_url).netloc
    return [url for url in requests
            if urlparse(url).scheme not in LOCAL_SCHEMES and urlparse(url).netloc != host]


def upload(page, paths, timeout_ms: int = 120_000) -> str:
    """Upload one file or several through the page's file input; returns the status line once it is loaded."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    page.locator("#upload input[type=file]").set_input_files([os.fspath(p) for p in paths])
    status = page.locator("#status")
    status.get_by_text("Loaded").wait_for(timeout=timeout_ms)
    return status.inner_text()


def click_and_read(page, button: str, textbox: str, timeout_ms: int = 120_000) -> str:
    """Click `button` (CSS selector) and return the text of the `textbox` textarea once it is filled."""
    page.locator(button).click()
    area = page.locator(f"{textbox} textarea")
    page.wait_for_function("element => element.value.trim().length > 0", arg=area.element_handle(),
                           timeout=timeout_ms)
    return area.input_value()


def upload_and_caption(page, path, timeout_ms: int = 120_000) -> str:
    """Upload one file, wait until it is described, click Caption, return the caption once it appears."""
    upload(page, path, timeout_ms)
    return click_and_read(page, "#caption-button", "#caption-output", timeout_ms)
