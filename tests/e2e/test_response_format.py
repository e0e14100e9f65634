"""A key's own `default_response_format`, driven by the official `openai` SDK: clients written
for DALL-E (LangChain's DallEAPIWrapper) read `data[0].url` and name no `response_format`, so an
operator gives their key `url` while the server's default stays `b64_json` for everyone else.

Checked: the key's default answers requests that name none (sync and async), the request's own
`response_format` wins, `PATCH /v1/admin/keys/{id}` changes and clears it, a value that is
neither `url` nor `b64_json` is a 400 naming the field.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from conftest import ImgproxyFactory, Server
from helpers import assert_error_envelope, client, http
from imaging import parse_png

MASTER_KEY = "mk-response-format-e2e"


@pytest.fixture
def keyed_server(imgproxy: ImgproxyFactory) -> Server:
    """A server with a master key and the server's default `response_format` (`b64_json`)."""
    return imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})


def admin(server: Server, method: str, path: str, body: Any) -> tuple[int, dict[str, str], bytes]:
    return http(method, f"{server.url}/v1/admin/keys{path}", json_body=body, headers={"Authorization": f"Bearer {MASTER_KEY}"})


def create_key(server: Server, **fields: Any) -> tuple[dict[str, Any], str]:
    """Issues a key with ``fields``; returns the key object and its secret."""
    status, _, raw = admin(server, "POST", "", {"name": "response-format", "credits": 100, **fields})
    assert status == 201, f"POST /v1/admin/keys -> {status}: {raw[:500]!r}"
    created = json.loads(raw)
    return created["key"], created["secret"]


def generate(server: Server, secret: str, prompt: str, **kwargs: Any) -> Any:
    """One image of the placeholder model through the SDK, as the holder of ``secret``."""
    response = client(server.url, api_key=secret).images.generate(
        model="placeholder", prompt=prompt, size="64x64", **kwargs
    )
    assert response.data is not None and len(response.data) == 1, response
    return response.data[0]


def assert_inline(image: Any) -> None:
    assert image.url is None and image.b64_json, f"expected b64_json only: {image}"
    parse_png(base64.b64decode(image.b64_json, validate=True))


def test_a_key_with_url_gets_urls_where_the_request_names_no_format(keyed_server: Server) -> None:
    url_key, url_secret = create_key(keyed_server, default_response_format="url")
    assert url_key["default_response_format"] == "url"
    plain_key, plain_secret = create_key(keyed_server)
    assert plain_key["default_response_format"] is None

    image = generate(keyed_server, url_secret, "a lighthouse for a DALL-E tool")
    assert image.url and image.b64_json is None, f"the key's default is url: {image}"
    status, headers, body = http("GET", image.url)
    assert status == 200, body[:300]
    assert headers.get("content-type") == "image/png"
    png = parse_png(body)
    assert (png.width, png.height) == (64, 64)

    # Another key, and the same key naming its format, are not changed by it.
    assert_inline(generate(keyed_server, plain_secret, "a lighthouse for a GPT image tool"))
    assert_inline(generate(keyed_server, url_secret, "a lighthouse, inline", response_format="b64_json"))


def test_patch_changes_and_clears_a_keys_default_and_tasks_follow_it(keyed_server: Server) -> None:
    key, secret = create_key(keyed_server, default_response_format="url")

    status, _, raw = admin(keyed_server, "PATCH", f"/{key['id']}", {"default_response_format": "b64_json"})
    assert status == 200, raw[:500]
    assert json.loads(raw)["default_response_format"] == "b64_json"
    assert_inline(generate(keyed_server, secret, "a kite after the change"))

    # A task's result is in URLs unless its request says otherwise: the key's default says so.
    body = {"model": "placeholder", "prompt": "a kite, queued", "size": "16x16", "async": True}
    status, _, raw = http(
        "POST", f"{keyed_server.url}/v1/images/generations", json_body=body, headers={"Authorization": f"Bearer {secret}"}
    )
    assert status == 202, raw[:500]
    task = json.loads(raw)
    deadline = time.monotonic() + 20
    while task["status"] not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline, f"task did not finish: {task}"
        time.sleep(0.05)
        status, _, raw = http("GET", f"{keyed_server.url}/v1/tasks/{task['id']}", headers={"Authorization": f"Bearer {secret}"})
        assert status == 200, raw[:500]
        task = json.loads(raw)
    assert task["status"] == "succeeded", task
    [item] = task["result"]["data"]
    assert item.get("b64_json") and not item.get("url"), task["result"]

    # `null` leaves the key to the server's default; a key left out of the change keeps it.
    status, _, raw = admin(keyed_server, "PATCH", f"/{key['id']}", {"default_response_format": "url"})
    assert status == 200, raw[:500]
    status, _, raw = admin(keyed_server, "PATCH", f"/{key['id']}", {"rpm": 100})
    assert json.loads(raw)["default_response_format"] == "url", raw[:500]
    status, _, raw = admin(keyed_server, "PATCH", f"/{key['id']}", {"default_response_format": None})
    assert status == 200, raw[:500]
    assert json.loads(raw)["default_response_format"] is None
    assert_inline(generate(keyed_server, secret, "a kite on the server's default"))


@pytest.mark.parametrize("value", ["png", "URL", 1])
def test_a_format_that_is_not_url_or_b64_json_is_a_400_naming_the_field(keyed_server: Server, value: Any) -> None:
    assert_error_envelope(
        *admin(keyed_server, "POST", "", {"name": "bad", "default_response_format": value}),
        expected_status=400,
        param="default_response_format",
        type="invalid_request_error",
    )
    key, _ = create_key(keyed_server)
    assert_error_envelope(
        *admin(keyed_server, "PATCH", f"/{key['id']}", {"default_response_format": value}),
        expected_status=400,
        param="default_response_format",
        type="invalid_request_error",
    )
