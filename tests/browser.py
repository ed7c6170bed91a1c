"""Real headless Chromium (Debian's chromium + chromedriver, installed by `make browser`) over
pages served on loopback, for checks of generated HTML."""

from __future__ import annotations

import functools
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Chromium's background services try to reach Google; this machine's closed network refuses them.
_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """An HTTP server for `folder` on 127.0.0.1 (a free port); yields its base URL, stops on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass(frozen=True)
class PageCheck:
    title: str
    images: int
    broken_images: list[str]
    console_errors: list[str]
    tables: int


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium session with a fresh profile; fails (never skips) if it is not installed."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(binary), (
            f"{binary} is missing: `make browser` installs Debian's chromium and chromium-driver"
        )
    with tempfile.TemporaryDirectory() as profile:
        options = Options()
        options.binary_location = CHROMIUM
        for flag in (*_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            yield driver
        finally:
            driver.quit()


def check_page(driver: webdriver.Chrome, url: str, screenshot: Path) -> PageCheck:
    """Load `url`, wait for it, and report broken images and console errors; saves a full-page screenshot."""
    driver.get(url)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(Array.from(document.images).map(i => i.complete ? null :"
        " new Promise(r => { i.onload = r; i.onerror = r; }))).then(() => done());"
    )
    broken = driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);"
    )
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    driver.set_window_size(1200, min(int(height) + 100, 16000))
    driver.save_screenshot(str(screenshot))
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return PageCheck(
        title=driver.title,
        images=driver.execute_script("return document.images.length;"),
        broken_images=broken,
        console_errors=errors,
        tables=driver.execute_script("return document.querySelectorAll('table').length;"),
    )
