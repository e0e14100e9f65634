"""Starting and stopping imgproxy: configuration by flags and environment, the data directory,
and graceful shutdown on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import STOP_TIMEOUT, ImgproxyFactory, free_port
from fake_openai import FakeOpenAI
from helpers import assert_error_envelope, client, http, raw_post


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


def _expect_startup_failure(imgproxy: ImgproxyFactory, server_env: dict[str, str] | None = None, **kwargs: object) -> str:
    """Starts a server that must refuse to start; returns its log."""
    server = imgproxy.start(server_env, wait=False, **kwargs)  # type: ignore[arg-type]
    assert server.proc is not None
    try:
        code = server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("imgproxy kept running although its configuration is invalid")
    server.exit_code = code  # do not treat the expected failure as a failed shutdown
    assert code != 0, "imgproxy exited 0 although it refused to start"
    assert http_refused(server.url)
    return server.log()


def http_refused(url: str) -> bool:
    try:
        http("GET", f"{url}/healthz", timeout=2)
    except OSError:
        return True
    return False


def test_without_a_master_key_a_non_loopback_listen_address_is_refused(imgproxy: ImgproxyFactory) -> None:
    port = free_port()
    log = _expect_startup_failure(imgproxy, port=port, cli=False, args=["--listen", f"0.0.0.0:{port}"])
    assert "IMGPROXY_MASTER_KEY" in log, "the refusal should tell the operator what to set"


def test_with_a_master_key_a_non_loopback_listen_address_is_allowed(imgproxy: ImgproxyFactory) -> None:
    port = free_port()
    server = imgproxy.start(
        {"IMGPROXY_MASTER_KEY": "mk-e2e"}, port=port, cli=False, args=["--listen", f"0.0.0.0:{port}"]
    )
    assert http("GET", f"{server.url}/healthz")[0] == 200


def test_config_file_sets_the_body_limit(imgproxy: ImgproxyFactory, tmp_path: Path) -> None:
    config = tmp_path / "imgproxy.toml"
    config.write_text("max_body_bytes = 4096\n")
    server = imgproxy.start(args=["--config", str(config)])
    _assert_body_limit(server.url, 4096)


def test_env_sets_the_body_limit_and_beats_the_config_file(imgproxy: ImgproxyFactory, tmp_path: Path) -> None:
    config = tmp_path / "imgproxy.toml"
    config.write_text("max_body_bytes = 1048576\n")
    server = imgproxy.start({"IMGPROXY_MAX_BODY_BYTES": "4096", "IMGPROXY_CONFIG": str(config)})
    _assert_body_limit(server.url, 4096)


def _assert_body_limit(base_url: str, limit: int) -> None:
    def body_of(size: int) -> bytes:
        prefix, suffix = b'{"model": "placeholder", "size": "16x16", "prompt": "', b'"}'
        return prefix + b"a" * (size - len(prefix) - len(suffix)) + suffix

    url = f"{base_url}/v1/images/generations"
    status, headers, answer = raw_post(url, body_of(limit + 1), {"Content-Type": "application/json"})
    assert_error_envelope(status, headers, answer, expected_status=413)
    status, _, answer = raw_post(url, body_of(limit), {"Content-Type": "application/json"})
    assert status == 200, f"a body of exactly the limit must be accepted: {status} {answer[:300]!r}"


def test_config_file_with_an_unknown_field_is_refused_at_startup(imgproxy: ImgproxyFactory, tmp_path: Path) -> None:
    config = tmp_path / "imgproxy.toml"
    config.write_text("max_body_bytes = 4096\nno_such_setting = true\n")
    log = _expect_startup_failure(imgproxy, args=["--config", str(config)])
    assert "no_such_setting" in log, "the error should name the unknown field"


def test_public_url_prefixes_image_urls(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_PUBLIC_URL": "https://img.example.test/gw/"})
    response = client(server.url).images.generate(
        model="placeholder", prompt="a map", size="16x16", response_format="url"
    )
    assert response.data is not None and response.data[0].url
    url = response.data[0].url
    assert url.startswith("https://img.example.test/gw/"), url
    # the same image is served by this server under the same path
    status, _, body = http("GET", server.url + url.removeprefix("https://img.example.test/gw"))
    assert status == 200
