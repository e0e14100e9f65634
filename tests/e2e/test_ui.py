"""The web UI in a real browser (issue 19): Debian's headless Chromium, driven by Playwright for
Python (``executable_path=/usr/bin/chromium``, no browser download), against the real binary with
fake upstreams. The pages run under the server's own content-security policy, so a test also
fails on any script error or CSP violation the page reports.

- the playground makes two 512x512 placeholder images with their cost and request id, and its
  forms follow the catalog (``gpt-image-2``'s ``quality`` values, ``nano-banana-2``'s
  ``aspect_ratio`` and ``image_size`` instead of ``size``);
- a stream from the fake OpenAI shows a partial image before the final one;
- reference images and a mask, uploaded through the Files API or given as a URL, reach the
  upstream's edit;
- a refused value shows the server's message next to its field;
- the console issues a key with 10 credits, the playground spends it until a 402 says so, and the
  ledger lists each charge with its thumbnails;
- the pages show no data without the right key.

``IMGPROXY_UI_SCREENSHOTS=DIR`` also writes ``playground.png`` and ``console.png`` into DIR (the
README's are made with ``IMGPROXY_UI_SCREENSHOTS=docs``). Without Chromium the tests are skipped,
saying so; Playwright itself is installed by tests/run."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server
from fake_openai import FakeOpenAI, solid_png
from helpers import http
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (tests/run installs Debian's `chromium`)"
)

MASTER_KEY = "mk-ui-e2e-master-key"
VIEWPORT = {"width": 1280, "height": 900}
SCREENSHOTS = os.environ.get("IMGPROXY_UI_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


class Tab:
    """One page in a fresh browser context (its own sessionStorage), noting every script error
    and content-security violation the page reports."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        self.page.on(
            "console",
            lambda message: self.problems.append(message.text)
            if "Content Security Policy" in message.text or "Refused to" in message.text
            else None,
        )
        self.page.goto(url)

    def use_key(self, key: str) -> None:
        self.page.fill("#key", key)
        self.page.click("#keybar button[type=submit]")

    def until(self, script: str, what: str, timeout: float = 20.0) -> Any:
        """Polls ``script`` (an expression, evaluated over the DevTools protocol, which the page's
        CSP does not govern) until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.page.evaluate(script)
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; problems: {self.problems}")
            time.sleep(0.05)

    def close(self) -> None:
        assert not self.problems, self.problems
        self.context.close()


@pytest.fixture
def tabs(browser: Browser) -> Iterator[Callable[[str], Tab]]:
    opened: list[Tab] = []

    def open_tab(url: str) -> Tab:
        tab = Tab(browser, url)
        opened.append(tab)
        return tab

    yield open_tab
    for tab in opened:
        tab.close()


def admin(server: Server, method: str, path: str, body: Any = None) -> Any:
    status, _, raw = http(method, f"{server.url}{path}", json_body=body, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert 200 <= status < 300, f"{method} {path} -> {status}: {raw[:300]!r}"
    return json.loads(raw)


def pick_model(tab: Tab, model: str) -> None:
    tab.page.wait_for_selector(f'#model option[value="{model}"]', state="attached")
    tab.page.select_option("#model", model)
    tab.until(f"document.querySelector('#model-info').textContent.length > 0 && document.getElementById('model').value === {json.dumps(model)}", "the model's form")


def run_and_wait(tab: Tab) -> None:
    """Clicks Run and waits until the page has shown the answer (its count of ended runs grew)."""
    done = int(tab.page.get_attribute("#run", "data-done") or 0)
    tab.page.click("#run")
    tab.until(f"Number(document.getElementById('run').dataset.done || 0) > {done}", "the run to end", timeout=60)


def loaded_sizes(tab: Tab, selector: str) -> list[list[int]]:
    return tab.page.eval_on_selector_all(selector, "images => images.map(i => [i.naturalWidth, i.naturalHeight])")


def meta(tab: Tab, name: str) -> str:
    return tab.page.text_content(f'#result-meta [data-k="{name}"]') or ""


def options(tab: Tab, param: str) -> list[str]:
    """The values a select of the form offers, without its `default` choice."""
    return tab.page.eval_on_selector_all(
        f'#fields [data-param="{param}"] select option', "opts => opts.map(o => o.value).filter(v => v !== '')"
    )


def test_placeholder_makes_two_512_images_with_cost_and_request_id(imgproxy: ImgproxyFactory, tabs) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    created = admin(server, "POST", "/v1/admin/keys", {"name": "ui", "credits": 100})
    tab = tabs(f"{server.url}/playground")
    tab.use_key(created["secret"])
    pick_model(tab, "placeholder")
    tab.page.fill("#f-prompt", "a lighthouse at dusk")
    tab.page.fill("#f-size", "512x512")
    tab.page.fill("#f-n", "2")
    tab.until("document.getElementById('estimate').textContent.startsWith('Estimated cost: 2 credits')", "the estimate")
    run_and_wait(tab)

    tab.until("document.querySelectorAll('#result-images img').length === 2 && [...document.querySelectorAll('#result-images img')].every(i => i.complete && i.naturalWidth > 0)", "two images")
    assert loaded_sizes(tab, "#result-images img") == [[512, 512], [512, 512]]
    assert tab.page.query_selector_all("#result-images figure.partial") == []
    assert meta(tab, "cost") == "2 credits"
    assert meta(tab, "size") == "512x512"
    assert meta(tab, "cache") == "MISS-GENERATED"
    assert meta(tab, "balance") == "98"
    request_id = meta(tab, "request id")
    assert re.fullmatch(r"[A-Za-z0-9_\-.:+/=@~]+", request_id), request_id
    # The request id shown is the one the ledger charged.
    status, _, raw = http("GET", f"{server.url}/v1/credits", headers={"Authorization": f"Bearer {created['secret']}"})
    assert status == 200
    assert request_id in {row["request_id"] for row in json.loads(raw)["recent"]}
    # The history lists it with its two images.
    tab.until(f"document.querySelectorAll('#history tr[data-id] img').length === 2 && [...document.querySelectorAll('#history img')].every(i => i.complete && i.naturalWidth > 0)", "the history")
    assert request_id in (tab.page.text_content("#history") or "")
    assert loaded_sizes(tab, "#history img") == [[512, 512], [512, 512]]
    # The request as code is the one that ran.
    snippet = tab.page.text_content("#snippet") or ""
    assert snippet.startswith(f"curl -sS {server.url}/v1/images/generations")
    assert '"size": "512x512"' in snippet and '"n": 2' in snippet and "$IMGPROXY_API_KEY" in snippet
    assert created["secret"] not in snippet
    tab.page.click('[data-lang="python"]')
    python = tab.page.text_content("#snippet") or ""
    assert "requests.post(" in python and '"n": 2,' in python


def test_the_form_follows_each_models_catalog_entry(imgproxy: ImgproxyFactory, tabs) -> None:
    server = imgproxy.start(
        {"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "GEMINI_API_KEY": "g-test",
         "GEMINI_BASE_URL": "http://127.0.0.1:9"}
    )

    def catalog(model: str) -> dict[str, Any]:
        status, _, raw = http("GET", f"{server.url}/v1/models/{model}")
        assert status == 200
        return json.loads(raw)

    tab = tabs(f"{server.url}/playground")  # an open server: no key needed
    pick_model(tab, "gpt-image-2")
    gpt = catalog("gpt-image-2")
    assert options(tab, "quality") == gpt["allowedParams"]["params"]["quality"]["values"] == ["auto", "low", "medium", "high"]
    assert tab.page.query_selector('#fields [data-param="size"] input') is not None
    for absent in ("aspect_ratio", "image_size", "seed"):
        assert tab.page.query_selector(f'#fields [data-param="{absent}"]') is None, absent
    # Limits become the inputs' bounds, defaults are shown.
    n = tab.page.query_selector('#fields [data-param="n"] input')
    assert (n.get_attribute("min"), n.get_attribute("max")) == ("1", str(gpt["allowedParams"]["max_n"]))
    assert tab.page.eval_on_selector('#f-quality option[value=""]', "o => o.textContent") == "default (auto)"
    assert not tab.page.is_hidden("#partials-field"), "gpt-image-2 streams partial images"

    pick_model(tab, "nano-banana-2")
    banana = catalog("nano-banana-2")["allowedParams"]["params"]
    assert options(tab, "aspect_ratio") == banana["aspect_ratio"]["values"]
    assert options(tab, "image_size") == banana["image_size"]["values"]
    assert tab.page.query_selector('#fields [data-param="size"]') is None
    assert tab.page.query_selector('#fields [data-param="quality"]') is None
    assert tab.page.is_hidden("#mask"), "nano-banana-2 takes no mask"

    # The filters: a provider's models only, then a capability's.
    tab.page.select_option("#provider-filter", catalog("nano-banana-2")["provider"])
    listed = tab.page.eval_on_selector_all("#model option", "o => o.map(x => x.value)")
    status, _, raw = http("GET", f"{server.url}/v1/models?provider={catalog('nano-banana-2')['provider']}")
    assert sorted(listed) == sorted(m["id"] for m in json.loads(raw)["data"] if not m.get("shutdown_date"))
    tab.page.select_option("#provider-filter", "")
    tab.page.select_option("#capability-filter", "mask")
    listed = tab.page.eval_on_selector_all("#model option", "o => o.map(x => x.value)")
    status, _, raw = http("GET", f"{server.url}/v1/models?capability=mask")
    assert listed and sorted(listed) == sorted(m["id"] for m in json.loads(raw)["data"] if not m.get("shutdown_date"))


def test_a_stream_shows_a_partial_image_before_the_final_one(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, tabs) -> None:
    server = imgproxy.start({"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": f"{fake_openai.url}/v1"})
    # Time between events, so that each partial image is on the page for a while.
    fake_openai.stream_plan(delay=0.5)
    tab = tabs(f"{server.url}/playground")
    pick_model(tab, "gpt-image-2")
    tab.page.fill("#f-prompt", "a lighthouse, streamed")
    tab.page.select_option("#f-quality", "low")
    tab.page.check("#stream-toggle")
    tab.page.fill("#f-partial_images", "2")
    tab.page.click("#run")

    partial = tab.until(
        "(() => { const i = document.querySelector('#result-images figure.partial img');"
        " return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null })()",
        "a partial image",
    )
    assert partial == [12, 12], "the fake's partial images are 12x12"
    assert tab.page.query_selector("#result-images figure:not(.partial)") is None, "no final image yet"
    final = tab.until(
        "(() => { const i = document.querySelector('#result-images figure:not(.partial) img');"
        " return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null })()",
        "the final image",
    )
    assert final == [16, 16], "the fake's final images are 16x16"
    tab.until("!document.getElementById('run').disabled", "the stream to end")
    log = tab.page.eval_on_selector_all("#stream-log li", "items => items.map(i => i.textContent)")
    assert log == ["partial image 1 of image 1", "partial image 2 of image 1", "image 1 completed"]
    assert meta(tab, "size") == "16x16", "the size of the image made, as the completed event says"
    assert re.fullmatch(r"\S+", meta(tab, "request id"))
    sent = fake_openai.image_requests()[-1].json
    assert sent["stream"] is True and sent["partial_images"] == 2


def test_reference_images_and_a_mask_by_upload_and_url(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, tabs, tmp_path: Path
) -> None:
    server = imgproxy.start({"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": f"{fake_openai.url}/v1"})
    reference, mask = tmp_path / "reference.png", tmp_path / "mask.png"
    reference.write_bytes(solid_png(1, size=32))
    mask.write_bytes(solid_png(2, size=32))
    data_url = "data:image/png;base64," + base64.b64encode(solid_png(3, size=32)).decode()
    tab = tabs(f"{server.url}/playground")
    pick_model(tab, "gpt-image-2")
    tab.page.fill("#f-prompt", "add a moon")
    tab.page.select_option("#f-quality", "low")
    # Uploads go through the Files API; the chips name the file ids.
    tab.page.set_input_files("#reference-file", str(reference))
    tab.page.wait_for_selector("#reference-list .chip")
    tab.page.fill("#reference-url", data_url)
    tab.page.click("#reference-add")
    tab.page.set_input_files("#mask-file", str(mask))
    tab.page.wait_for_selector("#mask-list .chip")
    status, _, raw = http("GET", f"{server.url}/v1/files")
    files = json.loads(raw)["data"]
    assert status == 200 and sorted(f["filename"] for f in files) == ["mask.png", "reference.png"]
    ids = {f["filename"]: f["id"] for f in files}
    snippet = tab.page.text_content("#snippet") or ""
    assert f"{server.url}/v1/images/edits" in snippet, "a mask makes it an edit"
    assert ids["reference.png"] in snippet and ids["mask.png"] in snippet and data_url in snippet
    run_and_wait(tab)

    tab.until("document.querySelectorAll('#result-images img').length === 1", "the edited image")
    assert tab.page.query_selector("#status .banner") is None, tab.page.text_content("#status")
    edit = fake_openai.edit_requests()[-1]
    # Both reference images reached the upstream as images, the mask as the mask.
    assert [part.data for part in edit.parts if part.name.startswith("image")] == [
        reference.read_bytes(), solid_png(3, size=32)
    ]
    assert edit.part("mask").data == mask.read_bytes()
    assert edit.form["prompt"] == "add a moon"


def test_a_refused_value_shows_the_servers_message_next_to_its_field(imgproxy: ImgproxyFactory, tabs) -> None:
    server = imgproxy.start()
    tab = tabs(f"{server.url}/playground")
    pick_model(tab, "placeholder")
    tab.page.fill("#f-prompt", "a fox")
    for param, value in (("size", "65x64"), ("n", "11")):
        body = {"model": "placeholder", "prompt": "a fox", param: int(value) if param == "n" else value}
        status, _, raw = http("POST", f"{server.url}/v1/images/generations", json_body=body)
        assert status == 400
        expected = json.loads(raw)["error"]
        assert expected["param"] == param
        tab.page.fill(f"#f-{param}", value)
        run_and_wait(tab)
        field = f'#fields [data-param="{param}"]'
        tab.until(f"document.querySelector('{field}').classList.contains('invalid')", f"{param} marked")
        assert tab.page.text_content(f"{field} .field-error") == expected["message"]
        assert tab.page.is_visible(f"{field} .field-error")
        assert expected["message"] in (tab.page.text_content("#status .banner") or "")
        # Only that field is marked.
        assert tab.page.eval_on_selector_all("#params .invalid", "fields => fields.map(f => f.dataset.param)") == [param]
        tab.page.fill(f"#f-{param}", "")


def test_the_console_issues_a_key_the_playground_spends_it_and_the_ledger_shows_each_charge(
    imgproxy: ImgproxyFactory, tabs, tmp_path: Path
) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    console = tabs(f"{server.url}/console")
    console.use_key(MASTER_KEY)
    console.page.wait_for_selector('.card[data-metric="active_keys"]')
    console.page.fill("#k-name", "acme")
    console.page.fill("#k-credits", "10")
    console.page.click("#create-key")
    secret = (console.page.wait_for_selector("#created-secret").text_content() or "").strip()
    assert secret.startswith("ipk_")
    key = next(k for k in admin(server, "GET", "/v1/admin/keys")["data"] if k["name"] == "acme")
    console.page.wait_for_selector(f'#keys-table tr[data-key="{key["id"]}"]')
    assert "10" in (console.page.text_content(f'#keys-table tr[data-key="{key["id"]}"]') or "")

    playground = tabs(f"{server.url}/playground")
    playground.use_key(secret)
    pick_model(playground, "placeholder")
    playground.page.fill("#f-size", "64x64")
    playground.page.fill("#f-n", "3")
    playground.page.check("#skip-cache")
    charged: list[str] = []
    for attempt in range(6):
        playground.page.fill("#f-prompt", f"a fox, take {attempt}")
        run_and_wait(playground)
        if playground.page.query_selector("#status .banner"):
            break
        playground.until("document.querySelectorAll('#result-images img').length === 3", "three images")
        assert meta(playground, "cost") == "3 credits"
        charged.append(meta(playground, "request id"))
        if attempt == 2 and SCREENSHOTS:
            playground.until(
                "document.querySelectorAll('#history tr[data-id]').length === 3"
                " && document.getElementById('estimate').textContent.startsWith('Estimated cost')"
                " && [...document.querySelectorAll('#history img, #result-images img')].every(i => i.complete && i.naturalWidth > 0)",
                "the history",
            )
            playground.page.screenshot(path=str(Path(SCREENSHOTS) / "playground.png"), full_page=True)
    banner = playground.page.text_content("#status .banner") or ""
    assert len(charged) == 3, "10 credits pay for three runs of 3 images"
    assert banner.startswith("Out of credits (402)"), banner
    assert "insufficient credits" in banner and "needs 3 credits" in banner and "has 1" in banner
    assert playground.page.get_attribute("#status .banner", "data-status") == "402"

    console.page.click('[data-view="ledger"]')
    console.page.select_option("#ledger-kind", "settle")
    console.until("document.querySelectorAll('#ledger-table tr[data-kind=\"settle\"]').length === 3", "three charges")
    console.until("[...document.querySelectorAll('#ledger-table img')].every(i => i.complete && i.naturalWidth > 0)", "the thumbnails")
    rows = console.page.eval_on_selector_all(
        '#ledger-table tr[data-kind="settle"]',
        "rows => rows.map(r => [r.dataset.request, [...r.querySelectorAll('img')].map(i => [i.naturalWidth, i.naturalHeight])])",
    )
    assert sorted(request for request, _ in rows) == sorted(charged)
    for _, sizes in rows:
        assert sizes == [[64, 64]] * 3
    # The overview counts the key and what it holds.
    console.until("document.querySelector('.card[data-metric=\"balance\"] .value').textContent === '1'", "the balance")
    console.page.select_option("#ledger-kind", "")
    console.until("document.querySelectorAll('#ledger-table tr[data-kind]').length === 7", "every row")
    if SCREENSHOTS:
        console.page.screenshot(path=str(Path(SCREENSHOTS) / "console.png"), full_page=True)


def test_the_pages_show_nothing_without_the_right_key(imgproxy: ImgproxyFactory, tabs) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    created = admin(server, "POST", "/v1/admin/keys", {"name": "tenant", "credits": 5})
    status, headers, _ = http("GET", f"{server.url}/playground")
    assert status == 200 and "script-src 'self'" in headers["content-security-policy"]
    playground = tabs(f"{server.url}/playground")
    playground.page.wait_for_selector("#status .banner")
    assert (playground.page.text_content("#status .banner") or "").startswith("The key was refused (401)")
    assert playground.page.eval_on_selector_all("#model option", "o => o.length") == 0
    console = tabs(f"{server.url}/console")
    console.use_key(created["secret"])
    console.until("document.querySelector('#status .banner') && document.querySelector('#status .banner').dataset.status === '403'", "the refusal")
    assert "needs the master key" in (console.page.text_content("#status") or "")
    assert console.page.query_selector_all(".card") == []
    landing = tabs(f"{server.url}/")
    assert landing.page.get_attribute('a[href="/playground"]', "href") == "/playground"
