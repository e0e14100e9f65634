"""`Idempotency-Key` (issue 14, point 6) against the real binary and a slow fake OpenAI that
counts what it receives: a client that disconnects during a generation and retries with the
same key gets the one image the first request made — one upstream call, one charge, the same
bytes on every retry — and the same key with another prompt is 409. Without a key, today's
refund on disconnect stays. An `async` request with a key submits one task, whatever the
retries.
"""

from __future__ import annotations

import http.client as http_client
import json
import secrets
import sqlite3
import time
from typing import Any

import openai
import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server
from fake_openai import FakeOpenAI
from helpers import assert_error_envelope, client, http

MASTER_KEY = "mk-idempotency-e2e"
# gpt-image-2 at quality=low costs 6 credits per image (imgproxy-core/catalog/openai.toml).
GPT_LOW = 6
# How long the fake upstream takes per image: long enough for a client to give up on it.
UPSTREAM_SECONDS = 2.0


def start(imgproxy: ImgproxyFactory, fake: FakeOpenAI) -> tuple[Server, dict[str, Any], str]:
    """A server on the fake OpenAI, and a key with 100 credits: (server, key, secret)."""
    fake.delay_images(UPSTREAM_SECONDS)
    server = imgproxy.start(
        {
            "IMGPROXY_MASTER_KEY": MASTER_KEY,
            "OPENAI_API_KEY": OPENAI_TEST_KEY,
            "OPENAI_BASE_URL": f"{fake.url}/v1",
        }
    )
    status, _, raw = http(
        "POST",
        f"{server.url}/v1/admin/keys",
        json_body={"name": "idempotency", "credits": 100},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert status == 201, raw[:500]
    created = json.loads(raw)
    return server, created["key"], created["secret"]


def body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-image-2", "prompt": prompt, "quality": "low", "size": "1024x1024", **extra}


def abandoned_post(server: Server, secret: str, payload: dict[str, Any], key: str | None) -> None:
    """POSTs a generation and hangs up before the answer: the client lost its connection."""
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    conn = http_client.HTTPConnection("127.0.0.1", server.port, timeout=0.5)
    try:
        conn.request("POST", "/v1/images/generations", body=json.dumps(payload), headers=headers)
        with pytest.raises(TimeoutError):
            conn.getresponse()
    finally:
        conn.close()


def wait_for(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def balance(server: Server, secret: str) -> int:
    status, _, raw = http("GET", f"{server.url}/v1/credits", headers={"Authorization": f"Bearer {secret}"})
    assert status == 200, raw[:500]
    return json.loads(raw)["balance"]


def ledger(server: Server, key_id: str) -> list[tuple[str, int]]:
    """The key's ledger rows (kind, amount), oldest first, read from the database itself."""
    with sqlite3.connect(f"file:{server.data_dir / 'imgproxy.db'}", uri=True, timeout=30) as db:
        rows = db.execute("SELECT kind, amount FROM ledger WHERE key_id = ? ORDER BY id", (key_id,)).fetchall()
    return [(kind, int(amount)) for kind, amount in rows]


def test_a_disconnected_client_retries_with_its_key_and_gets_the_one_image(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI
) -> None:
    server, key, secret = start(imgproxy, fake_openai)
    idempotency_key = f"order-{secrets.token_hex(4)}"
    abandoned_post(server, secret, body("a lighthouse at dusk"), idempotency_key)
    wait_for(lambda: len(fake_openai.image_requests()) == 1, "the upstream call")

    # The retry, through the official SDK, waits for the generation the first request left.
    sdk = client(server.url, api_key=secret)
    headers = {"Idempotency-Key": idempotency_key}
    raw = sdk.images.with_raw_response.generate(
        model="gpt-image-2", prompt="a lighthouse at dusk", quality="low", size="1024x1024", extra_headers=headers
    )
    assert raw.headers.get("idempotent-replayed") == "true"
    first = json.loads(raw.content)
    assert first.get("credits_used") == 0, first.get("credits_used")
    assert raw.headers.get("x-credits-remaining") == str(100 - GPT_LOW)
    image = first["data"][0]["b64_json"]
    assert image

    again = sdk.images.generate(
        model="gpt-image-2", prompt="a lighthouse at dusk", quality="low", size="1024x1024", extra_headers=headers
    )
    assert again.data and again.data[0].b64_json == image

    # One upstream call, one charge.
    assert len(fake_openai.image_requests()) == 1
    assert balance(server, secret) == 100 - GPT_LOW
    charges = [row for row in ledger(server, key["id"]) if row[0] != "credit"]
    assert sum(amount for _, amount in charges) == -GPT_LOW, charges

    # The same key with another prompt is a conflict.
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.images.generate(model="gpt-image-2", prompt="a windmill", quality="low", size="1024x1024", extra_headers=headers)
    assert caught.value.status_code == 409
    error = caught.value.body
    assert isinstance(error, dict), error
    assert (error.get("code"), error.get("param")) == ("idempotency_key_reused", "Idempotency-Key"), error
    assert len(fake_openai.image_requests()) == 1
    assert balance(server, secret) == 100 - GPT_LOW


def test_without_a_key_a_disconnected_client_is_refunded(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    server, _, secret = start(imgproxy, fake_openai)
    abandoned_post(server, secret, body("a lighthouse at dawn"), None)
    wait_for(lambda: len(fake_openai.image_requests()) == 1, "the upstream call")
    wait_for(lambda: balance(server, secret) == 100, "the refund")


def test_a_bad_key_is_400(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    server, _, secret = start(imgproxy, fake_openai)
    status, headers, raw = http(
        "POST",
        f"{server.url}/v1/images/generations",
        json_body=body("a lighthouse"),
        headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": "k" * 256},
    )
    assert_error_envelope(status, headers, raw, expected_status=400, param="Idempotency-Key")
    assert fake_openai.image_requests() == []


def test_an_async_request_with_a_key_submits_one_task(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    server, _, secret = start(imgproxy, fake_openai)
    headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": f"task-{secrets.token_hex(4)}"}
    url = f"{server.url}/v1/images/generations"
    status, first_headers, raw = http("POST", url, json_body=body("a harbour", **{"async": True}), headers=headers)
    assert status == 202, raw[:500]
    assert "idempotent-replayed" not in first_headers
    task = json.loads(raw)
    status, replay_headers, raw = http("POST", url, json_body=body("a harbour", **{"async": True}), headers=headers)
    assert status == 202, raw[:500]
    assert replay_headers.get("idempotent-replayed") == "true"
    assert json.loads(raw)["id"] == task["id"]
    status, _, raw = http("POST", url, json_body=body("a harbour"), headers=headers)
    assert status == 409, raw[:500]
    wait_for(lambda: len(fake_openai.image_requests()) == 1, "the task's upstream call")
    wait_for(lambda: balance(server, secret) == 100 - GPT_LOW, "the task's charge")
    time.sleep(0.5)
    assert len(fake_openai.image_requests()) == 1
