"""Seed 004 (shared/seeds/004_*.txt) as its clients use it, only the host and key swapped: the
real binary, Gemini served by tests/e2e/fake_upstreams.py's fake, references from a local file
server (the edit example's ``https://example.com/photo.jpg`` becomes that server's
``/photo.jpg``: nothing here reaches the internet), callbacks received by tests/e2e/webhooks.py.

Checked: both create examples answer ``{code: 200, msg: "success", data: {taskId, state:
"pending"}}``; the poll example sees them through to ``completed`` with ``resultUrls`` that
download and millisecond times, and ``GET /v1/tasks/{id}`` reads the same task; every model
name the seed lists resolves and reaches the upstream model it names; a failed upstream is a
``failed`` task with ``failMsg``; a ``callback_url`` gets seed 004's callback body, parsed as
the seed's example handler parses it (``JSON.parse`` of ``param`` and ``resultJson``), retried
after a failure with the same Standard Webhooks signature headers; refusals (unknown model, an
aspect ratio the model does not list, a missing prompt or key) are seed 004's envelope.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest
from conftest import ImgproxyFactory, Server
from fake_upstreams import FakeFiles, FakeGemini, Recorded, Response, google_error, solid_png
from helpers import http
from test_credits import MASTER_KEY, balance, create_key
from test_providers import GEMINI_KEY, _fake
from test_tasks import fetch_image, get_task, webhook_secret
from webhooks import WebhookReceiver, verify

ROUTE = "/api/v1/images/generations"
# The seed's model names, and the Gemini model each reaches.
SEED_MODELS = {
    "gemini-2.5-flash-image": "gemini-3.1-flash-image",  # retired upstream: its successor
    "gemini-3-pro-image-lite": "gemini-3-pro-image",
    "gemini-3-pro-image": "gemini-3-pro-image",
    "nanobanana2/gemini-3.1-flash-image-preview": "gemini-3.1-flash-image",
    "nanobanana-2-lite/gemini-3.1-flash-image-preview": "gemini-3.1-flash-image",
    "nanobanana-2-beta/gemini-3.1-flash-image-preview": "gemini-3.1-flash-image",
    "gemini-3-pro-image-gemini": "gemini-3-pro-image",
    "gemini-3.1-flash-image-gemini": "gemini-3.1-flash-image",
}
POLICY = "Content policy violation"


class PickyGemini(FakeGemini):
    """The Gemini fake, refusing prompts that ask for trouble as a policy violation."""

    def route(self, request: Recorded) -> Response:
        if b"forbidden" in request.body:
            return google_error(400, "INVALID_ARGUMENT", POLICY)
        return super().route(request)


def photo_server() -> FakeFiles:
    """The reference server, also serving the edit example's ``/photo.jpg``."""
    fake = FakeFiles()
    fake.files["/photo.jpg"] = Response(200, solid_png(1004), content_type="image/png")
    return fake


gemini = _fake(lambda: PickyGemini(GEMINI_KEY))
photos = _fake(photo_server, "The reference server the door's image_url points at (allow-listed).")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    up = WebhookReceiver().start()
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture
def seeded(imgproxy: ImgproxyFactory, gemini: PickyGemini, photos: FakeFiles, receiver: WebhookReceiver) -> tuple[Server, str]:
    server = imgproxy.start(
        {
            "IMGPROXY_MASTER_KEY": MASTER_KEY,
            "GEMINI_API_KEY": GEMINI_KEY,
            "GEMINI_BASE_URL": gemini.url,
            "IMGPROXY_FETCH_ALLOW_HOSTS": f"127.0.0.1:{photos.port},{receiver.host_port}",
        }
    )
    _, secret = create_key(server, credits=100_000)
    return server, secret


def seed_headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


def create(server: Server, secret: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, headers, raw = http("POST", f"{server.url}{ROUTE}", json_body=body, headers=seed_headers(secret), timeout=30)
    assert headers.get("content-type", "").startswith("application/json"), headers
    return status, json.loads(raw)


def created(server: Server, secret: str, body: dict[str, Any]) -> str:
    status, answer = create(server, secret, body)
    assert status == 200, answer
    assert answer["code"] == 200 and answer["msg"] == "success", answer
    assert set(answer["data"]) == {"taskId", "state"} and answer["data"]["state"] == "pending", answer
    return answer["data"]["taskId"]


def poll(server: Server, secret: str, task_id: str) -> dict[str, Any]:
    status, _, raw = http("GET", f"{server.url}{ROUTE}?task_id={task_id}", headers={"Authorization": f"Bearer {secret}"})
    assert status == 200, raw[:500]
    answer = json.loads(raw)
    assert answer["code"] == 200 and answer["msg"] == "success", answer
    assert answer["data"]["state"] in ("pending", "processing", "completed", "failed"), answer
    return answer["data"]


def poll_until_done(server: Server, secret: str, task_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data = poll(server, secret, task_id)
        if data["state"] in ("completed", "failed"):
            return data
        assert time.monotonic() < deadline, f"task {task_id} still {data['state']} after {timeout}s"
        time.sleep(0.1)


def refused(server: Server, secret: str | None, body: dict[str, Any], status: int) -> str:
    headers = seed_headers(secret) if secret else {"Content-Type": "application/json"}
    got, answer_headers, raw = http("POST", f"{server.url}{ROUTE}", json_body=body, headers=headers)
    answer = json.loads(raw)
    assert got == status, answer
    assert answer_headers.get("content-type", "").startswith("application/json"), answer_headers
    assert set(answer) == {"code", "msg", "data"} and answer["code"] == status and answer["data"] is None, answer
    assert isinstance(answer["msg"], str) and answer["msg"], answer
    return answer["msg"]


def test_the_examples_create_poll_to_completed_and_their_urls_download(
    seeded: tuple[Server, str], gemini: PickyGemini, photos: FakeFiles
) -> None:
    server, secret = seeded
    text = created(
        server,
        secret,
        {
            "model": "gemini-3-pro-image-lite",
            "prompt": "A futuristic cityscape at sunset with flying cars",
            "aspect_ratio": "16:9",
            "resolution": "2k",
        },
    )
    edit = created(
        server,
        secret,
        {
            "model": "gemini-3-pro-image",
            "prompt": "Add dramatic storm clouds to the sky",
            "image_url": photos.link("/photo.jpg"),
            "aspect_ratio": "16:9",
        },
    )
    for task_id in (text, edit):
        data = poll_until_done(server, secret, task_id)
        assert data["state"] == "completed" and data["taskId"] == task_id, data
        assert len(data["resultUrls"]) == 1 and data["failMsg"] is None, data
        for url in data["resultUrls"]:
            fetch_image(url)
        assert isinstance(data["createTime"], int) and data["completeTime"] >= data["createTime"], data
        # The same task through the gateway's own route.
        task = get_task(server, task_id, secret)
        assert task["status"] == "succeeded" and task["model"] == "nano-banana-pro", task

    calls = gemini.generate_calls()
    assert [c.path for c in calls] == ["/v1beta/models/gemini-3-pro-image:generateContent"] * 2, gemini.summary()
    configs = [json.loads(c.body)["generationConfig"]["imageConfig"] for c in calls]
    assert configs[0] == {"aspectRatio": "16:9", "imageSize": "2K"}, configs
    assert configs[1] == {"aspectRatio": "16:9"}, configs
    parts = json.loads(calls[1].body)["contents"][0]["parts"]
    assert any("inlineData" in part for part in parts), "the image_url became a reference image"
    assert photos.gets() == ["/photo.jpg"]
    assert gemini.problems == [], gemini.problems


def test_every_seed_model_name_resolves_to_the_upstream_it_names(seeded: tuple[Server, str], gemini: PickyGemini) -> None:
    server, secret = seeded
    for name, upstream in SEED_MODELS.items():
        task_id = created(server, secret, {"model": name, "prompt": f"a quiet harbour for {name}", "aspect_ratio": "1:1"})
        data = poll_until_done(server, secret, task_id)
        assert data["state"] == "completed", (name, data)
        assert gemini.generate_calls()[-1].path == f"/v1beta/models/{upstream}:generateContent", (name, gemini.summary())
    assert gemini.problems == [], gemini.problems


def test_a_failed_task_says_why_and_its_callback_is_the_seeds_shape(
    seeded: tuple[Server, str], receiver: WebhookReceiver
) -> None:
    server, secret = seeded
    signing = webhook_secret(server, secret)
    before = balance(server, secret)
    task_id = created(
        server,
        secret,
        {"model": "gemini-3-pro-image", "prompt": "something forbidden", "callback_url": receiver.url("/failed")},
    )
    data = poll_until_done(server, secret, task_id)
    assert data["state"] == "failed" and POLICY in data["failMsg"] and data["resultUrls"] == [], data
    assert balance(server, secret) == before, "a failed task is not charged"

    (delivery,) = receiver.wait_accepted(1, 10, "/failed")
    verify(signing, delivery)
    body = delivery.json
    assert body["code"] == 200 and body["msg"] == "success", body
    hook = body["data"]
    assert set(hook) == {
        "taskId", "model", "state", "param", "resultJson", "failCode", "failMsg", "costTime", "completeTime", "createTime",
    }, hook
    assert hook["taskId"] == task_id and hook["state"] == "failed" and hook["resultJson"] is None, hook
    assert POLICY in hook["failMsg"], hook
    assert json.loads(hook["param"])["prompt"] == "something forbidden", hook


def test_a_completed_callback_parses_as_the_seeds_handler_parses_it_and_is_retried(
    seeded: tuple[Server, str], receiver: WebhookReceiver
) -> None:
    server, secret = seeded
    signing = webhook_secret(server, secret)
    receiver.then(500)
    body = {
        "model": "gemini-3-pro-image-lite",
        "prompt": "A futuristic cityscape at sunset with flying cars",
        "aspect_ratio": "16:9",
        "resolution": "2k",
        "callback_url": receiver.url("/webhook/image"),
    }
    task_id = created(server, secret, body)
    (delivery,) = receiver.wait_accepted(1, 15, "/webhook/image")
    attempts = receiver.received("/webhook/image")
    assert [a.answered for a in attempts] == [500, 200], [a.answered for a in attempts]
    assert attempts[1].at - attempts[0].at >= 0.8, "the first retry is about 1 s later"
    assert {a.webhook_id for a in attempts} == {f"msg_{task_id}"}
    verify(signing, delivery)

    # As the seed's example handler reads it.
    data = delivery.json["data"]
    assert data["taskId"] == task_id and data["state"] == "completed", data
    result_urls = json.loads(data["resultJson"])["resultUrls"]
    fetch_image(result_urls[0])
    param = json.loads(data["param"])
    assert param["prompt"] == body["prompt"] and param["model"] == body["model"], param
    assert param["resolution"] == "2K" and param["callback_url"] == body["callback_url"], param
    assert data["failCode"] is None and data["failMsg"] is None, data
    assert data["completeTime"] >= data["createTime"] and data["costTime"] >= 0, data


def test_refusals_are_the_seeds_envelope(seeded: tuple[Server, str], gemini: PickyGemini) -> None:
    server, secret = seeded
    msg = refused(server, secret, {"model": "gemini-9-ultra-image", "prompt": "a fox"}, 404)
    assert "gemini-9-ultra-image" in msg, msg
    msg = refused(server, secret, {"model": "gemini-3-pro-image", "prompt": "a fox", "aspect_ratio": "2:1"}, 400)
    assert "aspect_ratio" in msg and "16:9" in msg, msg
    msg = refused(server, secret, {"model": "gemini-3-pro-image", "prompt": "a fox", "resolution": "8k"}, 400)
    assert "8K" in msg or "image_size" in msg, msg
    assert "prompt" in refused(server, secret, {"model": "gemini-3-pro-image"}, 400)
    refused(server, None, {"model": "gemini-3-pro-image", "prompt": "a fox"}, 401)
    refused(server, "ipk_not_a_key", {"model": "gemini-3-pro-image", "prompt": "a fox"}, 401)
    assert gemini.generate_calls() == [], "nothing refused reaches the upstream"
