"""Starting and stopping imgproxy: configuration by flags and environment, the data directory,
and graceful shutdown on SIGTERM."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from conftest import STOP_TIMEOUT, ImgproxyFactory
from fake_openai import FakeOpenAI
from helpers import client, http


@pytest.mark.parametrize("cli", [True, False], ids=["flags", "env"])
def test_listen_address_and_data_dir_are_configurable(imgproxy: ImgproxyFactory, cli: bool) -> None:
    """--listen / --data-dir and IMGPROXY_LISTEN / IMGPROXY_DATA_DIR: the server answers on the
    given port and keeps the images of response_format=url in the given folder."""
    server = imgproxy.start(cli=cli)
    response = client(server.url).images.generate(
        model="placeholder", prompt="a windmill", size="48x48", response_format="url"
    )
    assert response.data is not None and response.data[0].url
    status, _, image = http("GET", response.data[0].url)
    assert status == 200
    stored = [p for p in server.data_dir.rglob("*") if p.is_file() and p.read_bytes() == image]
    assert stored, f"the image is not stored under the data dir {server.data_dir}"


def test_sigterm_stops_an_idle_server_cleanly(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start()
    assert http("GET", f"{server.url}/healthz")[0] == 200
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < STOP_TIMEOUT


def test_sigterm_lets_an_in_flight_request_finish(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    server = imgproxy.start({"OPENAI_API_KEY": "sk-test-e2e", "OPENAI_BASE_URL": f"{fake_openai.url}/v1"})
    fake_openai.delay_images(1.5)
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            outcome["response"] = client(server.url).images.generate(model="gpt-image-2", prompt="a slow one")
        except Exception as error:  # noqa: BLE001 - reported below
            outcome["error"] = error

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 10
    while not fake_openai.image_requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_openai.image_requests(), "the request never reached the upstream"

    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert "error" not in outcome, f"the in-flight request failed during shutdown: {outcome.get('error')!r}"
    response = outcome["response"]
    assert response.data is not None and len(response.data) == 1  # type: ignore[attr-defined]
    assert server.stop() == 0
