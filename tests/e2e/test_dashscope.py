"""Alibaba Cloud Model Studio (DashScope, the Qwen-Image models) end to end: the real binary
with ``DASHSCOPE_BASE_URL`` pointed at :class:`fake_upstreams.FakeDashScope`, driven by the
official OpenAI Python SDK.

Both sides are checked: what the fake received (the synchronous ``multimodal-generation`` call
or the ``text2image`` task flow, the key, the body: sizes written ``W*H``, one task per image
for the fixed-size family, reference images as data URLs before the text) and what the client
got (the fake's images, intact; the rewritten prompt of a task). Every test asserts the fake
saw nothing the real API would refuse. A metered key pays the catalog price for what came back
and gets a refusal refunded; a task cut off by a kill is resumed after the restart, never
submitted twice.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import openai
import pytest
from conftest import ImgproxyFactory, Server
from fake_upstreams import DASHSCOPE_API, FakeDashScope, decode_data_url, noise_png
from helpers import client, http
from test_credits import MASTER_KEY, balance, bearer, create_key
from test_providers import assert_images, assert_no_problems
from test_task_resume import task, wait_for

DASHSCOPE_KEY = "sk-dashscope-e2e-0123456789abcdef"
PROMPT = "a paper lantern over a quiet river"


@pytest.fixture
def dashscope() -> Iterator[FakeDashScope]:
    with FakeDashScope(DASHSCOPE_KEY) as fake:
        yield fake


def start(imgproxy: ImgproxyFactory, fake: FakeDashScope, **extra: str) -> Server:
    return imgproxy.start({"DASHSCOPE_API_KEY": DASHSCOPE_KEY, "DASHSCOPE_BASE_URL": fake.api_url, **extra})


def assert_key_kept(server: Server, answer: str) -> None:
    assert DASHSCOPE_KEY not in answer, "the DashScope key leaked into an answer"
    assert DASHSCOPE_KEY not in server.log(), "the DashScope key was written to the log"


def generate(server: Server, prompt_suffix: str = "", **kwargs: Any) -> openai.types.ImagesResponse:
    raw = client(server.url).images.with_raw_response.generate(prompt=PROMPT + prompt_suffix, **kwargs)
    assert raw.status_code == 200, raw.text[:500]
    assert_key_kept(server, raw.text)
    return raw.parse()


def price(server: Server, model: str) -> int:
    status, _, raw = http("GET", f"{server.url}/v1/models/{model}", headers=bearer(MASTER_KEY))
    assert status == 200, raw[:300]
    return json.loads(raw)["pricing"]["per_image"]


# ------------------------------------------------------------------------------------------
# the synchronous API, the task API, reference images
# ------------------------------------------------------------------------------------------


def test_qwen_image_2_0_makes_n_images_in_one_synchronous_call(imgproxy: ImgproxyFactory, dashscope: FakeDashScope) -> None:
    server = start(imgproxy, dashscope)
    response = generate(server, model="qwen-image-2.0", n=2, size="1536x1024")

    (call,) = dashscope.generation_calls()
    assert dashscope.submit_calls() == [], "qwen-image-2.0 has no task API"
    assert call.headers.get("authorization") == f"Bearer {DASHSCOPE_KEY}"
    body = call.json
    assert body["model"] == "qwen-image-2.0"
    assert body["input"] == {"messages": [{"role": "user", "content": [{"text": PROMPT}]}]}, body
    assert body["parameters"] == {"size": "1536*1024", "n": 2, "prompt_extend": True, "watermark": False}, body
    assert_no_problems(dashscope)
    assert_images(response, dashscope.images)


def test_qwen_image_plus_runs_one_task_per_image_and_answers_the_rewritten_prompt(
    imgproxy: ImgproxyFactory, dashscope: FakeDashScope
) -> None:
    server = start(imgproxy, dashscope)
    response = generate(server, model="qwen-image-plus", n=2, extra_body={"aspect_ratio": "16:9", "seed": 11})

    submits = dashscope.submit_calls()
    assert len(submits) == 2, dashscope.summary()
    assert dashscope.generation_calls() == [], "qwen-image-plus runs as tasks here"
    seeds = set()
    for submit in submits:
        assert submit.headers.get("x-dashscope-async") == "enable"
        body = submit.json
        assert body["input"] == {"prompt": PROMPT}, body
        parameters = body["parameters"]
        assert (parameters["size"], parameters["n"]) == ("1664*928", 1), parameters
        seeds.add(parameters["seed"])
    assert seeds == {11, 12}, "fanned-out tasks get distinct seeds"
    assert len(dashscope.poll_calls()) >= 2 and dashscope.cancel_calls() == []
    assert_no_problems(dashscope)
    assert_images(response, dashscope.images)
    assert response.data and all(image.revised_prompt == f"{PROMPT}, detailed" for image in response.data), response


IMAGE_A = noise_png(40, seed=5)
IMAGE_B = noise_png(48, seed=6)


def test_qwen_image_edit_plus_gets_the_reference_images_before_the_text(
    imgproxy: ImgproxyFactory, dashscope: FakeDashScope
) -> None:
    server = start(imgproxy, dashscope)
    response = client(server.url).images.edit(
        model="qwen-image-edit-plus",
        image=[("a.png", IMAGE_A, "image/png"), ("b.png", IMAGE_B, "image/png")],
        prompt=PROMPT,
        size="1024x1536",
    )

    (call,) = dashscope.generation_calls()
    content = call.json["input"]["messages"][0]["content"]
    assert [list(item) for item in content] == [["image"], ["image"], ["text"]], content
    assert [decode_data_url(item["image"]) for item in content[:2]] == [("image/png", IMAGE_A), ("image/png", IMAGE_B)]
    assert content[2]["text"] == PROMPT
    assert call.json["parameters"]["size"] == "1024*1536"
    assert_no_problems(dashscope)
    assert_images(response, dashscope.images)


def test_base64_images_in_the_answer_are_decoded(imgproxy: ImgproxyFactory, dashscope: FakeDashScope) -> None:
    server = start(imgproxy, dashscope)
    response = generate(server, model="qwen-image-max", prompt_suffix=" B64OUT")
    assert dashscope.calls("GET", prefix="/files/") == [], "inline images need no download"
    assert_no_problems(dashscope)
    assert_images(response, dashscope.images)


# ------------------------------------------------------------------------------------------
# refusals, credits
# ------------------------------------------------------------------------------------------


def test_a_rate_limit_is_a_429_with_the_upstreams_retry_after(imgproxy: ImgproxyFactory, dashscope: FakeDashScope) -> None:
    server = start(imgproxy, dashscope)
    status, headers, raw = http(
        "POST",
        f"{server.url}/v1/images/generations",
        json_body={"model": "qwen-image-2.0", "prompt": f"{PROMPT} RATELIMIT"},
    )
    assert status == 429, raw[:300]
    assert headers.get("retry-after") == "7", headers
    assert_no_problems(dashscope)


@pytest.mark.parametrize("model", ["qwen-image-max", "qwen-image-plus"])
def test_a_metered_key_pays_the_catalog_price_and_refusals_are_refunded(
    imgproxy: ImgproxyFactory, dashscope: FakeDashScope, model: str
) -> None:
    server = start(imgproxy, dashscope, IMGPROXY_MASTER_KEY=MASTER_KEY)
    _, secret = create_key(server, credits=500)
    per_image = price(server, model)

    raw = client(server.url, api_key=secret).images.with_raw_response.generate(model=model, prompt=PROMPT)
    assert raw.status_code == 200, raw.text[:300]
    assert json.loads(raw.text)["credits_used"] == per_image
    assert balance(server, secret) == 500 - per_image

    # A content refusal: 400 on the synchronous API, a FAILED task on the task API.
    with pytest.raises(openai.BadRequestError) as refused:
        client(server.url, api_key=secret).images.generate(model=model, prompt=f"{PROMPT} MODERATE")
    assert refused.value.code == "moderation_blocked", refused.value.body
    failure = "ERR200" if model == "qwen-image-max" else "FAILJOB"
    with pytest.raises(openai.APIStatusError) as failed:
        client(server.url, api_key=secret).images.generate(model=model, prompt=f"{PROMPT} {failure}")
    assert failed.value.status_code == 502, failed.value.body
    assert balance(server, secret) == 500 - per_image, "refused and failed requests are refunded"
    assert_key_kept(server, "")
    assert_no_problems(dashscope)


# ------------------------------------------------------------------------------------------
# a task resumed after a restart
# ------------------------------------------------------------------------------------------


def test_an_interrupted_task_resumes_its_dashscope_task_after_a_restart(imgproxy: ImgproxyFactory) -> None:
    with FakeDashScope(DASHSCOPE_KEY, running_polls=10**6) as fake:
        env = {
            "IMGPROXY_MASTER_KEY": MASTER_KEY,
            "IMGPROXY_INSTANCE_LEASE_SECS": "3",
            "DASHSCOPE_API_KEY": DASHSCOPE_KEY,
            "DASHSCOPE_BASE_URL": fake.api_url,
        }
        server = imgproxy.start(env)
        _, secret = create_key(server, credits=100)
        per_image = price(server, "qwen-image")
        status, _, raw = http(
            "POST",
            f"{server.url}/v1/images/generations",
            json_body={"model": "qwen-image", "prompt": PROMPT, "async": True},
            headers=bearer(secret),
        )
        assert status == 202, raw[:300]
        task_id = json.loads(raw)["id"]
        wait_for(lambda: len(fake.submit_calls()) == 1, 15, "the DashScope task to be submitted")
        wait_for(lambda: len(fake.poll_calls()) >= 1, 15, "the first poll")
        assert task(server, secret, task_id)["status"] == "processing"

        assert server.proc is not None
        server.proc.kill()  # SIGKILL: no cancel, no word
        server.proc.wait(timeout=10)
        server.exit_code = server.proc.returncode
        with fake.lock:  # the task finishes while imgproxy is down
            for job in fake.tasks.values():
                job.polls_left, job.status = 0, "RUNNING"

        restarted = imgproxy.start(env, data_dir=server.data_dir, port=server.port)
        done = wait_for(
            lambda: (t := task(restarted, secret, task_id))["status"] not in ("queued", "processing") and t,
            30,
            "the resumed task to finish",
        )
        assert done["status"] == "succeeded", done
        assert done["credits_used"] == per_image, done
        status, _, image = http("GET", done["result"]["data"][0]["url"])
        assert status == 200 and image == fake.images[0], "the resumed task returns DashScope's image"
        assert len(fake.submit_calls()) == 1, "resuming never submits a second task"
        assert fake.cancel_calls() == [], "a killed process cancels nothing"
        assert all(call.path.startswith(f"{DASHSCOPE_API}/tasks/0385dc79-") for call in fake.poll_calls())
        assert balance(restarted, secret) == 100 - per_image, "charged exactly once"
        assert "resuming an interrupted task" in restarted.log()
        assert_key_kept(restarted, json.dumps(done))
        assert_no_problems(fake)
