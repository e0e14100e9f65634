"""Seed 001 as its client sees it: both example requests of its document sent unchanged apart
from the host (``https://api.infery.ai`` becomes the server) and the key, the first with the key
bare in ``Authorization`` (no ``Bearer``), as the document shows it. The server runs as a seed
001 operator would run it: ``IMGPROXY_DEFAULT_RESPONSE_FORMAT=url`` (the document's default) and
``dall-e-3``, shut down upstream, remapped to ``gpt-image-2``. The answer is the document's body:
``created``, ``data[].url`` (which downloads) and ``credits_used``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server
from fake_openai import FakeOpenAI
from helpers import assert_error_envelope, http
from imaging import PNG_SIGNATURE
from test_credits import MASTER_KEY, balance, create_key

SEED_ROUTE = "https://api.infery.ai/v1/images/generations"

# The document's first example: its body template, exactly.
TEMPLATE = {
    "model": "<string>",
    "prompt": "<string>",
    "n": 1,
    "size": "<string>",
    "quality": "<string>",
    "style": "vivid",
    "response_format": "url",
    "aspect_ratio": "<string>",
    "image_size": "<string>",
    "person_generation": "dont_allow",
    "background": "transparent",
    "output_format": "png",
    "output_compression": 123,
    "input_fidelity": "high",
    "moderation": "auto",
    "negative_prompt": "<string>",
    "seed": 123,
}

# The document's second example.
DALL_E_3 = {
    "model": "dall-e-3",
    "prompt": "An isometric dev dashboard, neon green accents, dark theme",
    "size": "1024x1024",
    "n": 1,
}


@pytest.fixture
def server(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, tmp_path: Path) -> Server:
    config = tmp_path / "seed001.toml"
    config.write_text('[remap]\n"dall-e-3" = "gpt-image-2"\n')
    env = {
        "IMGPROXY_MASTER_KEY": MASTER_KEY,
        "OPENAI_API_KEY": OPENAI_TEST_KEY,
        "OPENAI_BASE_URL": f"{fake_openai.url}/v1",
        "IMGPROXY_DEFAULT_RESPONSE_FORMAT": "url",
    }
    return imgproxy.start(env, args=["--config", str(config)])


def post(server: Server, body: dict[str, Any], authorization: str) -> tuple[int, dict[str, str], bytes]:
    url = SEED_ROUTE.replace("https://api.infery.ai", server.url)
    headers = {"Authorization": authorization, "Content-Type": "application/json"}
    return http("POST", url, body=json.dumps(body).encode(), headers=headers, timeout=60)


def assert_seed_body(raw: bytes) -> dict[str, Any]:
    """The document's answer: ``created``, one ``data`` item with a ``url`` that downloads a
    PNG, and ``credits_used``."""
    body = json.loads(raw)
    assert isinstance(body["created"], int) and body["created"] > 1_700_000_000, body
    (item,) = body["data"]
    assert isinstance(item.get("url"), str) and "b64_json" not in item, item
    status, headers, image = http("GET", item["url"])
    assert status == 200 and image.startswith(PNG_SIGNATURE), (status, headers, image[:50])
    assert isinstance(body.get("credits_used"), int), body
    return body


def test_the_bearer_example_answers_the_documented_body(server: Server, fake_openai: FakeOpenAI) -> None:
    _, secret = create_key(server, credits=10_000)
    status, headers, raw = post(server, DALL_E_3, f"Bearer {secret}")
    assert status == 200, raw[:500]
    body = assert_seed_body(raw)
    assert body["credits_used"] > 0
    assert balance(server, secret) == 10_000 - body["credits_used"] == int(headers["x-credits-remaining"])
    (sent,) = fake_openai.image_requests()
    assert sent.json["model"] == "gpt-image-2" and sent.json["size"] == "1024x1024", sent.json
    # Asking for inline images still works.
    status, _, raw = post(server, {**DALL_E_3, "response_format": "b64_json"}, f"Bearer {secret}")
    assert status == 200, raw[:500]
    (item,) = json.loads(raw)["data"]
    assert base64.b64decode(item["b64_json"]).startswith(PNG_SIGNATURE)


def test_a_bare_key_in_authorization_is_the_same_key(server: Server, fake_openai: FakeOpenAI) -> None:
    _, secret = create_key(server, credits=10_000)
    status, headers, raw = post(server, DALL_E_3, secret)
    assert status == 200, raw[:500]
    body = assert_seed_body(raw)
    assert balance(server, secret) == 10_000 - body["credits_used"] == int(headers["x-credits-remaining"])
    # A wrong bare key, or none, is refused like a wrong Bearer one.
    for authorization in ("ipk_not_a_key", "Bearer ipk_not_a_key", ""):
        status, headers, raw = post(server, DALL_E_3, authorization)
        assert_error_envelope(status, headers, raw, expected_status=401, code="invalid_api_key")
    # A short balance is a 402 whichever way the key is sent.
    _, poor = create_key(server, credits=0)
    for authorization in (poor, f"Bearer {poor}"):
        status, headers, raw = post(server, DALL_E_3, authorization)
        assert_error_envelope(status, headers, raw, expected_status=402, code="insufficient_credits")
    assert len(fake_openai.image_requests()) == 1


def test_the_template_example_is_refused_naming_its_placeholder_model(server: Server, fake_openai: FakeOpenAI) -> None:
    """The first example's body is a template (``"model": "<string>"``): sent as it is, with the
    key bare, it is authenticated and then refused as an unknown model, by name, for nothing."""
    _, secret = create_key(server, credits=10_000)
    status, headers, raw = post(server, TEMPLATE, secret)
    error = assert_error_envelope(status, headers, raw, expected_status=404, param="model", code="model_not_found")
    assert "<string>" in error["message"], error
    assert balance(server, secret) == 10_000
    assert fake_openai.requests == []
