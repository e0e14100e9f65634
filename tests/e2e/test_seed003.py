"""Seed 003's door end to end: ``POST /api/v1/image/generate`` on the real binary, every model
key the seed lists served by its fake upstream (Gemini, Replicate, fal, OpenAI, xAI).

Checked: the seed's example body, sent unchanged but for host and key, answers
``{"inferenceJobId"}`` and its job finishes at ``GET /v1/tasks/{id}`` with an image that
downloads; each of the nine keys does the same with the defaults the seed lists (background
removal and vectorize with their required attachment, a file id from ``POST /v1/files``); a
missing attachment, a ratio the key does not list and an unknown key are 400s naming the field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server
from fake_openai import FakeOpenAI
from fake_upstreams import FakeFal, FakeGemini, FakeReplicate, FakeXai, noise_png
from helpers import assert_error_envelope, http, multipart, raw_post
from imaging import PNG_SIGNATURE
from test_providers import fal, gemini, replicate, start, xai  # noqa: F401 - fixtures
from test_tasks import wait_task

KEY = "sk-seed003"
AUTH = {"Authorization": f"Bearer {KEY}"}

# The one example request of seed 003's document, as it shows it.
EXAMPLE = {
    "model": "nano-banana-2",
    "prompt": "A polished product shot of a ceramic mug on travertine",
    "params": {"aspectRatio": "1:1", "resolution": "1K"},
}


@pytest.fixture
def server(
    imgproxy: ImgproxyFactory,
    gemini: FakeGemini,  # noqa: F811
    replicate: FakeReplicate,  # noqa: F811
    xai: FakeXai,  # noqa: F811
    fal: FakeFal,  # noqa: F811
    fake_openai: FakeOpenAI,
) -> Server:
    openai = {"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": f"{fake_openai.url}/v1"}
    return start(imgproxy, gemini=gemini, replicate=replicate, xai=xai, fal=fal, extra=openai)


def generate(server: Server, body: dict[str, Any]) -> tuple[int, Any]:
    status, _, raw = http("POST", f"{server.url}/api/v1/image/generate", json_body=body, headers=AUTH, timeout=30)
    return status, json.loads(raw)


def finished_job(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    """Sends ``body``; checks the answer is seed 003's ``{"inferenceJobId"}`` and waits for the job."""
    status, answer = generate(server, body)
    assert status == 200 and set(answer) == {"inferenceJobId"}, (status, answer)
    task = wait_task(server, answer["inferenceJobId"], KEY, timeout=30)
    assert task["status"] == "succeeded", task
    return task


def download(task: dict[str, Any]) -> tuple[str, bytes]:
    (item,) = task["result"]["data"]
    status, headers, raw = http("GET", item["url"])
    assert status == 200, (status, raw[:200])
    return headers.get("content-type", ""), raw


def upload(server: Server) -> str:
    body, content_type = multipart([("purpose", "vision"), ("file", ("input.png", noise_png(32, seed=3), "image/png"))])
    status, _, raw = raw_post(f"{server.url}/v1/files", body, {**AUTH, "Content-Type": content_type})
    assert status == 200, raw[:300]
    return json.loads(raw)["id"]


def test_the_documented_example_answers_an_inference_job_that_finishes(server: Server, gemini: FakeGemini) -> None:  # noqa: F811
    task = finished_job(server, EXAMPLE)
    assert task["model"] == "nano-banana-2", task
    content_type, raw = download(task)
    assert content_type.startswith("image/png") and raw.startswith(PNG_SIGNATURE)
    (call,) = gemini.generate_calls()
    image_config = call.json["generationConfig"]["imageConfig"]
    assert image_config == {"aspectRatio": "1:1", "imageSize": "1K"}, image_config


GENERATORS = ["nano-banana-2", "nano-banana-pro", "seedream-4-5", "z-image", "gpt-image-1-5", "grok-imagine", "grok-imagine-pro"]


@pytest.mark.parametrize("key", GENERATORS)
def test_each_generation_key_finishes_with_the_defaults_the_seed_lists(server: Server, key: str) -> None:
    task = finished_job(server, {"model": key, "prompt": f"a lighthouse at dusk, by {key}"})
    content_type, _ = download(task)
    assert content_type.startswith("image/"), content_type


def test_background_removal_and_vectorize_take_their_attachment(server: Server, fal: FakeFal) -> None:  # noqa: F811
    file_id = upload(server)
    removed = finished_job(
        server,
        {"model": "birefnet-bg-removal", "params": {"bgRemovalModel": "portrait", "quality": "high"}, "attachmentMediaIds": [file_id]},
    )
    assert download(removed)[0].startswith("image/png")
    vector = finished_job(server, {"model": "runware-vectorize", "attachmentMediaIds": [file_id]})
    content_type, raw = download(vector)
    assert content_type.startswith("image/svg+xml") and b"<svg" in raw, (content_type, raw[:100])
    birefnet = next(c.json for c in fal.submit_calls() if c.path == "/fal-ai/birefnet")
    assert birefnet["model"] == "Portrait" and birefnet["operating_resolution"] == "2048x2048", birefnet
    assert birefnet["image_url"].startswith("data:image/png;base64,"), birefnet


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"model": "birefnet-bg-removal"}, "attachmentMediaIds", "requires 1 attachment"),
        ({"model": "seedream-4-5", "prompt": "p", "params": {"aspectRatio": "4:5"}}, "params.aspectRatio", "not one of"),
        ({"model": "dall-e-9", "prompt": "p"}, "model", "unknown model `dall-e-9`"),
        ({"model": "runware-vectorize", "params": {"vectorizeModel": "picsart:1@1"}, "attachmentMediaIds": ["file-x"]}, None, "picsart"),
    ],
)
def test_refusals_are_400_naming_the_field(server: Server, body: dict[str, Any], param: str | None, says: str) -> None:
    status, headers, raw = http("POST", f"{server.url}/api/v1/image/generate", json_body=body, headers=AUTH)
    error = assert_error_envelope(status, headers, raw, expected_status=400)
    if param:
        assert error["param"] == param, error
    assert says in error["message"], error
