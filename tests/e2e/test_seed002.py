"""Seed 002's door end to end: ``POST /imini/router/v1/images/generate`` on the real binary, the
Gemini provider pointed at the fake (tests/e2e/fake_upstreams.py), an issued key with credits.

The seed document's example request is sent unchanged apart from the host and the key; its
answer is seed 002's ``{task_id, model, created_at, request_id}`` and the task finishes at
``GET /v1/tasks/{id}`` with an image that downloads. Also checked: the seed's defaults
(``1:1`` without references, ``1K``), its ``images`` objects as references, its other model name
``google/nano-banana``, model ids with a slash on ``GET /v1/models/{id}``, and clear errors for an
aspect ratio the model does not list, an unknown model and a missing prompt.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from conftest import ImgproxyFactory, Server
from fake_upstreams import FakeFiles, FakeGemini
from helpers import assert_error_envelope, http
from imaging import PNG_SIGNATURE
from test_credits import MASTER_KEY, balance, create_key
from test_providers import GEMINI_KEY, assert_no_problems, gemini, refs  # noqa: F401 - fixtures
from test_tasks import wait_task

DOOR = "/imini/router/v1/images/generate"
# The seed document's example body, as its curl sends it.
SEED_EXAMPLE = """
{
  "model": "google/nano-banana-pro",
  "prompt": "A cute shiba inu in a spacesuit standing on the moon, 3D cartoon style",
  "aspect_ratio": "1:1",
  "resolution": "1K"
}
"""
ISO_MILLIS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
# nano-banana-pro at 1K (imgproxy-core/catalog/gemini.toml), and per reference image.
PRO_1K = 134
PRO_PER_REFERENCE = 1


def start(imgproxy: ImgproxyFactory, gemini: FakeGemini, refs: FakeFiles | None = None) -> Server:
    env = {"IMGPROXY_MASTER_KEY": MASTER_KEY, "GEMINI_API_KEY": GEMINI_KEY, "GEMINI_BASE_URL": gemini.url}
    if refs:
        env["IMGPROXY_FETCH_ALLOW_HOSTS"] = f"127.0.0.1:{refs.port}"
    return imgproxy.start(env)


def send(server: Server, secret: str | None, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """The seed's curl: ``Authorization: Bearer <token>``, ``Content-Type: application/json``."""
    headers = {"Content-Type": "application/json"}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    return http("POST", f"{server.url}{DOOR}", body=body, headers=headers)


def submitted(status: int, headers: dict[str, str], raw: bytes, model: str) -> dict[str, Any]:
    """Seed 002's answer: exactly ``task_id``, ``model``, ``created_at`` and ``request_id``."""
    assert status == 200, f"expected 200, got {status}: {raw[:500]!r}"
    answer = json.loads(raw)
    assert set(answer) == {"task_id", "model", "created_at", "request_id"}, answer
    assert answer["task_id"].startswith("task_"), answer
    assert answer["model"] == model, answer
    assert ISO_MILLIS.match(answer["created_at"]), answer
    created = datetime.strptime(answer["created_at"], "%Y-%m-%dT%H:%M:%S.%f%z")
    assert abs(created.timestamp() - time.time()) < 60, answer
    assert answer["request_id"] == headers.get("x-request-id"), (answer, headers)
    return answer


def finished(server: Server, secret: str, task_id: str) -> dict[str, Any]:
    """The task, succeeded, read through ``GET /v1/tasks/{id}``; its one image downloads."""
    task = wait_task(server, task_id, secret)
    assert task["status"] == "succeeded", task
    [image] = task["result"]["data"]
    status, headers, raw = http("GET", image["url"])
    assert status == 200 and raw.startswith(PNG_SIGNATURE), (status, headers, raw[:100])
    return task


def image_config(call: Any) -> dict[str, Any]:
    return call.json["generationConfig"].get("imageConfig") or {}


def test_the_seed_example_is_a_task_that_finishes(imgproxy: ImgproxyFactory, gemini: FakeGemini) -> None:
    server = start(imgproxy, gemini)
    _, secret = create_key(server, credits=1000)
    answer = submitted(*send(server, secret, SEED_EXAMPLE.encode()), model="google/nano-banana-pro")

    task = finished(server, secret, answer["task_id"])
    assert task["model"] == "nano-banana-pro" and task["credits_used"] == PRO_1K, task
    assert task["request_id"] == answer["request_id"], task
    [call] = gemini.generate_calls()
    assert call.path == "/v1beta/models/gemini-3-pro-image:generateContent", call.path
    assert image_config(call) == {"aspectRatio": "1:1", "imageSize": "1K"}, call.json
    texts = [p["text"] for c in call.json["contents"] for p in c["parts"] if "text" in p]
    assert any("shiba inu in a spacesuit" in text for text in texts), texts
    assert balance(server, secret) == 1000 - PRO_1K
    assert_no_problems(gemini)


def test_defaults_references_and_the_other_seed_name(
    imgproxy: ImgproxyFactory, gemini: FakeGemini, refs: FakeFiles
) -> None:
    server = start(imgproxy, gemini, refs)
    _, secret = create_key(server, credits=1000)

    # No aspect ratio or resolution: the seed's 1:1 and 1K.
    bare = {"model": "google/nano-banana-pro", "prompt": "a red kite over dunes"}
    answer = submitted(*send(server, secret, json.dumps(bare).encode()), model="google/nano-banana-pro")
    finished(server, secret, answer["task_id"])
    assert image_config(gemini.generate_calls()[-1]) == {"aspectRatio": "1:1", "imageSize": "1K"}

    # Reference images as objects: no ratio is sent, the model takes the references'.
    referenced = {
        "model": "google/nano-banana-pro",
        "prompt": "the same cat, in watercolour",
        "images": [{"url": refs.link("/ref-a.png")}],
        "resolution": "2K",
    }
    answer = submitted(*send(server, secret, json.dumps(referenced).encode()), model="google/nano-banana-pro")
    task = finished(server, secret, answer["task_id"])
    assert task["credits_used"] == PRO_1K + PRO_PER_REFERENCE, task
    call = gemini.generate_calls()[-1]
    assert image_config(call) == {"imageSize": "2K"}, call.json
    parts = [p for c in call.json["contents"] for p in c["parts"]]
    assert any("inlineData" in p for p in parts), parts
    assert "/ref-a.png" in refs.gets()

    # `google/nano-banana` (Gemini 2.5 Flash Image, shut down) is served by its successor.
    other = {"model": "google/nano-banana", "prompt": "a lantern in fog"}
    answer = submitted(*send(server, secret, json.dumps(other).encode()), model="google/nano-banana")
    task = finished(server, secret, answer["task_id"])
    assert task["model"] == "nano-banana-2", task
    assert gemini.generate_calls()[-1].path == "/v1beta/models/gemini-3.1-flash-image:generateContent"
    assert_no_problems(gemini, refs)


def test_model_ids_with_a_slash_are_described(imgproxy: ImgproxyFactory, gemini: FakeGemini) -> None:
    server = start(imgproxy, gemini)
    _, secret = create_key(server, credits=10)
    headers = {"Authorization": f"Bearer {secret}"}
    for path in ("/v1/models/google/nano-banana-pro", "/v1/models/google%2Fnano-banana-pro"):
        status, _, raw = http("GET", f"{server.url}{path}", headers=headers)
        assert status == 200, (path, raw[:300])
        model = json.loads(raw)
        assert model["id"] == "nano-banana-pro" and "google/nano-banana-pro" in model["aliases"], model
    status, _, raw = http("GET", f"{server.url}/v1/models/google/nano-banana", headers=headers)
    retired = json.loads(raw)
    assert status == 200 and retired["id"] == "nano-banana" and retired["replacement"] == "nano-banana-2", retired
    status, headers_, raw = http("GET", f"{server.url}/v1/models/google/nano-banana-ultra", headers=headers)
    assert_error_envelope(status, headers_, raw, expected_status=404, code="model_not_found")


@pytest.mark.parametrize(
    ("body", "status", "param", "says"),
    [
        ({"model": "google/nano-banana-pro", "prompt": "p", "aspect_ratio": "2:1"}, 400, "aspect_ratio", "2:1"),
        ({"model": "google/nano-banana-pro", "prompt": "p", "resolution": "8K"}, 400, "resolution", "resolution `8K`"),
        ({"model": "google/nano-banana-ultra", "prompt": "p"}, 404, ..., "google/nano-banana-ultra"),
        ({"model": "google/nano-banana-pro"}, 400, ..., "prompt"),
        ({"model": "google/nano-banana-pro", "prompt": "p", "n": 2}, 400, ..., "unknown field `n`"),
    ],
)
def test_bad_requests_are_clear_errors_and_charge_nothing(
    imgproxy: ImgproxyFactory, gemini: FakeGemini, body: dict[str, Any], status: int, param: Any, says: str
) -> None:
    server = start(imgproxy, gemini)
    _, secret = create_key(server, credits=1000)
    error = assert_error_envelope(
        *send(server, secret, json.dumps(body).encode()), expected_status=status, param=param
    )
    assert says in error["message"], error
    assert balance(server, secret) == 1000
    assert gemini.generate_calls() == []


def test_a_missing_key_is_401(imgproxy: ImgproxyFactory, gemini: FakeGemini) -> None:
    server = start(imgproxy, gemini)
    assert_error_envelope(*send(server, None, SEED_EXAMPLE.encode()), expected_status=401)


def test_the_url_api_takes_a_model_id_with_a_slash(imgproxy: ImgproxyFactory, gemini: FakeGemini) -> None:
    server = start(imgproxy, gemini)
    _, secret = create_key(server, credits=1000)
    headers = {"Authorization": f"Bearer {secret}"}
    for path in (
        "/api/generate?prompt=a+kite+at+noon&model=google/nano-banana-pro",
        "/a+kite+at+dusk/google%2Fnano-banana-pro",
    ):
        status, _, raw = http("GET", f"{server.url}{path}", headers=headers)
        assert status == 200 and raw.startswith(PNG_SIGNATURE), (path, status, raw[:300])
        assert gemini.generate_calls()[-1].path == "/v1beta/models/gemini-3-pro-image:generateContent"
    assert len(gemini.generate_calls()) == 2
    assert_no_problems(gemini)
