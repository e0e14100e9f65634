"""A real browser on another origin (issue 12, finding 8): a page served by a small Python
HTTP server on one loopback port ``fetch()``es imgproxy on another, draws the image on a canvas
and calls ``canvas.toDataURL()``, which throws on a canvas tainted by a cross-origin image. The
page writes the outcome into the DOM; headless Chromium dumps the DOM, which the test reads.
Drawn when imgproxy's ``[cors] allowed_origins`` lists the page's origin, refused when not.

Needs Debian's ``chromium`` (tests/run installs it); without it the tests are skipped, saying
so, never passed."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from conftest import ImgproxyFactory

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (tests/run installs Debian's `chromium`)"
)

# The outcome the page writes: `drawn WxH <bytes of the data URL>` or `refused: <error>`.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cross-origin canvas</title></head>
<body><div id="out">pending</div>
<script>
const API = %(api)s, MODE = %(mode)s;
const out = document.getElementById("out");
async function source() {
  if (MODE === "img") {
    // No fetch: the image route itself, loaded for a canvas.
    return API + "/api/generate?prompt=a+canvas+fox&size=32x32&seed=5";
  }
  const answer = await fetch(API + "/v1/images/generations", {
    method: "POST",
    // A bearer header and JSON: a request that needs a preflight.
    headers: {"Content-Type": "application/json", "Authorization": "Bearer sk-browser"},
    body: JSON.stringify({prompt: "a canvas fox", size: "32x32", seed: 5, response_format: MODE}),
  });
  if (!answer.ok) throw new Error("status " + answer.status);
  const body = await answer.json();
  return MODE === "url" ? body.data[0].url : "data:image/png;base64," + body.data[0].b64_json;
}
(async () => {
  try {
    const image = new Image();
    image.crossOrigin = "anonymous";
    await new Promise(async (ok, fail) => {
      image.onload = ok;
      image.onerror = () => fail(new Error("the image did not load"));
      try { image.src = await source(); } catch (error) { fail(error); }
    });
    const canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    canvas.getContext("2d").drawImage(image, 0, 0);
    const data = canvas.toDataURL("image/png");  // throws SecurityError on a tainted canvas
    out.textContent = "drawn " + canvas.width + "x" + canvas.height + " " + data.length;
  } catch (error) {
    out.textContent = "refused: " + error.name + ": " + error.message;
  }
})();
</script></body></html>
"""


class PageServer:
    """Serves one folder on a free loopback port: another origin than imgproxy's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = partial(_QuietHandler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "PageServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


@pytest.fixture
def pages(tmp_path: Path) -> Iterator[PageServer]:
    root = tmp_path / "site"
    root.mkdir()
    with PageServer(root) as server:
        yield server


def outcome(page_url: str, profile: Path) -> str:
    """Loads ``page_url`` in headless Chromium and returns what the page wrote."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        page_url,
    ]
    # Generous: a cold Chromium on a loaded 2-core machine; the page itself takes under a second.
    done = subprocess.run(command, capture_output=True, timeout=120, check=False)
    dom = done.stdout.decode(errors="replace")
    found = re.search(r'<div id="out">(.*?)</div>', dom, re.S)
    assert found, f"no outcome in the dumped DOM (exit {done.returncode}):\n{dom[:2000]}\n{done.stderr.decode(errors='replace')[-2000:]}"
    return html.unescape(found.group(1)).strip()


def run_page(pages: PageServer, tmp_path: Path, api: str, mode: str) -> str:
    (pages.root / f"{mode}.html").write_text(PAGE % {"api": f'"{api}"', "mode": f'"{mode}"'})
    return outcome(f"{pages.origin}/{mode}.html", tmp_path / f"profile-{mode}")


@pytest.mark.parametrize("mode", ["b64_json", "url", "img"])
def test_an_allowed_origin_fetches_and_draws_on_a_canvas(
    imgproxy: ImgproxyFactory, pages: PageServer, tmp_path: Path, mode: str
) -> None:
    server = imgproxy.start({"IMGPROXY_CORS_ALLOWED_ORIGINS": pages.origin})
    result = run_page(pages, tmp_path, server.url, mode)
    assert re.fullmatch(r"drawn 32x32 \d+", result), f"{mode}: {result}"


@pytest.mark.parametrize("mode", ["b64_json", "url", "img"])
def test_an_origin_not_allowed_is_refused(imgproxy: ImgproxyFactory, pages: PageServer, tmp_path: Path, mode: str) -> None:
    # Another origin is allowed, so CORS is on; this page's is not.
    server = imgproxy.start({"IMGPROXY_CORS_ALLOWED_ORIGINS": "http://127.0.0.1:1"})
    result = run_page(pages, tmp_path, server.url, mode)
    assert result.startswith("refused: "), f"{mode}: {result}"
