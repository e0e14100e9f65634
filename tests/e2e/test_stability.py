"""Stability AI end to end (providers-2.md §11): the real binary with ``STABILITY_BASE_URL``
pointed at :class:`fake_upstreams.FakeStability`, driven by the official OpenAI Python SDK.

Each test checks both sides: what the fake received (route, bearer key, ``Accept: image/*``,
the multipart fields, the input image's bytes) and what the SDK got. The fake validates every
form against its route and notes violations in ``fake.problems``, which every test asserts
empty. Metered keys are charged the catalog price per image that came back, and a failed or
refused generation is refunded in full.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest
from conftest import ImgproxyFactory, Server
from fake_upstreams import FakeStability, noise_png
from helpers import client
from test_credits import MASTER_KEY, Backend, assert_ledger_adds_up, balance, create_key
from test_providers import assert_images, assert_no_problems, assert_same_image, decode

STABILITY_KEY = "sk-stability-e2e-0123456789abcdef"

# Prices from imgproxy-core/catalog/stability.toml, in credits per image.
CORE = 30
ULTRA = 80

# An input image as Stability takes one: a PNG of at least 64 px per side.
INPUT_IMAGE = noise_png(64, seed=3)


@pytest.fixture
def stability() -> Iterator[FakeStability]:
    with FakeStability(STABILITY_KEY) as fake:
        yield fake


def start(imgproxy: ImgproxyFactory, fake: FakeStability, args: list[str] | None = None) -> Server:
    env = {"STABILITY_API_KEY": STABILITY_KEY, "STABILITY_BASE_URL": fake.url, "IMGPROXY_MASTER_KEY": MASTER_KEY}
    return imgproxy.start(env, args=args)


def sdk(server: Server, key: str = MASTER_KEY) -> openai.OpenAI:
    """The SDK on ``server`` with ``key``: by default the master key, which is unmetered."""
    return client(server.url, api_key=key)


def assert_key_kept(server: Server, text: str) -> None:
    assert STABILITY_KEY not in text, "the Stability key leaked into an answer"
    assert STABILITY_KEY not in server.log(), "the Stability key was written to the log"


def sdk_refusal(call: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value


def test_core_fans_n_out_with_a_seed_per_image_and_a_ratio_from_size(
    imgproxy: ImgproxyFactory, stability: FakeStability
) -> None:
    server = start(imgproxy, stability)
    raw = sdk(server).images.with_raw_response.generate(
        model="stable-image-core",
        prompt="a paper crane",
        n=2,
        size="1536x1024",
        extra_body={"seed": 5, "style_preset": "origami", "negative_prompt": "blurry"},
    )
    assert raw.status_code == 200, raw.text[:500]
    assert_key_kept(server, raw.text)
    calls = stability.generate_calls()
    assert [c.path for c in calls] == ["/v2beta/stable-image/generate/core"] * 2, stability.summary()
    for call in calls:
        assert call.headers.get("accept") == "image/*", call.headers
        assert call.headers.get("content-type", "").startswith("multipart/form-data; boundary="), call.headers
        assert call.files == [], call.part_summary()
    forms = sorted((c.form for c in calls), key=lambda form: form["seed"])
    expected = {
        "prompt": "a paper crane",
        "aspect_ratio": "3:2",
        "style_preset": "origami",
        "negative_prompt": "blurry",
        "output_format": "png",
    }
    assert forms == [{**expected, "seed": "5"}, {**expected, "seed": "6"}], forms
    assert_no_problems(stability)
    assert_images(raw.parse(), stability.images)


def test_an_sd3_variant_goes_to_the_sd3_route_as_its_model_field(
    imgproxy: ImgproxyFactory, stability: FakeStability
) -> None:
    server = start(imgproxy, stability)
    response = sdk(server).images.generate(model="sd3.5-large-turbo", prompt="a lantern", output_format="jpeg")
    (call,) = stability.generate_calls()
    assert call.path == "/v2beta/stable-image/generate/sd3", stability.summary()
    assert call.form == {
        "prompt": "a lantern",
        "model": "sd3.5-large-turbo",
        "mode": "text-to-image",
        "output_format": "jpeg",
    }, call.part_summary()
    assert_no_problems(stability)
    assert response.data is not None and len(response.data) == 1
    image = decode(response.data[0])
    assert image[:3] == b"\xff\xd8\xff", "jpeg was asked for"
    assert_same_image(image, stability.images[0])


def test_an_edit_sends_the_input_image_with_its_strength(imgproxy: ImgproxyFactory, stability: FakeStability) -> None:
    server = start(imgproxy, stability)
    master = sdk(server)
    # sd3: mode=image-to-image and the client's strength.
    response = master.images.edit(
        model="sd3.5-medium",
        image=("photo.png", INPUT_IMAGE, "image/png"),
        prompt="the same scene at dusk",
        extra_body={"strength": 0.4},
    )
    assert response.data is not None and decode(response.data[0]) == stability.images[0]
    # ultra: no mode, and the catalog's default strength when the client sends none.
    master.images.edit(model="stable-image-ultra", image=("photo.png", INPUT_IMAGE, "image/png"), prompt="as a mosaic")

    medium, ultra = stability.generate_calls()
    assert (medium.path, ultra.path) == ("/v2beta/stable-image/generate/sd3", "/v2beta/stable-image/generate/ultra")
    assert medium.form == {
        "prompt": "the same scene at dusk",
        "model": "sd3.5-medium",
        "mode": "image-to-image",
        "strength": "0.4",
        "output_format": "png",
    }, medium.part_summary()
    assert ultra.form == {"prompt": "as a mosaic", "strength": "0.5", "output_format": "png"}, ultra.part_summary()
    for call in (medium, ultra):
        image = call.part("image")
        assert image.data == INPUT_IMAGE, "the input image must reach Stability intact"
        assert image.content_type == "image/png" and image.filename, image.headers
    assert_no_problems(stability)


def test_a_filtered_image_and_a_refused_prompt_are_400_moderation_blocked_and_refunded(
    imgproxy: ImgproxyFactory, stability: FakeStability
) -> None:
    server = start(imgproxy, stability)
    key, secret = create_key(server, credits=500)
    metered = sdk(server, secret)
    for prompt in ("a FILTERED scene", "a MODERATE scene"):
        error = sdk_refusal(lambda: metered.images.generate(model="stable-image-ultra", prompt=prompt))
        assert error.status_code == 400, error
        assert isinstance(error.body, dict) and error.body.get("code") == "moderation_blocked", error.body
        assert_key_kept(server, json.dumps(error.body))
    assert len(stability.generate_calls()) == 2
    assert balance(server, secret) == 500, "a refused generation must cost nothing"
    assert_ledger_adds_up(Backend("sqlite").ledger(server, key["id"]), 500)
    assert_no_problems(stability)


def test_credits_are_the_catalog_price_per_image_and_failures_are_refunded(
    imgproxy: ImgproxyFactory, stability: FakeStability, tmp_path: Path
) -> None:
    config = tmp_path / "imgproxy.toml"
    config.write_text("[providers.stability]\ntimeout_secs = 1\n")
    server = start(imgproxy, stability, args=["--config", str(config)])
    key, secret = create_key(server, credits=1000)
    metered = sdk(server, secret)

    raw = metered.images.with_raw_response.generate(model="stable-image-core", prompt="two kites", n=2)
    assert json.loads(raw.content).get("credits_used") == 2 * CORE
    assert raw.headers.get("x-credits-remaining") == str(1000 - 2 * CORE)
    raw = metered.images.with_raw_response.generate(model="stable-image-ultra", prompt="one kite")
    assert json.loads(raw.content).get("credits_used") == ULTRA
    spent = 2 * CORE + ULTRA

    # NOCREDIT last: a 402 takes the only key out of the pool until a restart.
    failures = [
        ("FAIL500", 502, "upstream_error"),
        ("GARBAGE", 502, "upstream_error"),
        ("SLOW", 504, "upstream_timeout"),
        ("RATELIMIT", 429, "rate_limit_exceeded"),
        ("NOCREDIT", 502, "upstream_error"),
    ]
    for keyword, status, code in failures:
        error = sdk_refusal(lambda: metered.images.generate(model="stable-image-core", prompt=f"kites {keyword}", n=2))
        assert error.status_code == status, (keyword, error)
        assert isinstance(error.body, dict) and error.body.get("code") == code, (keyword, error.body)
        if keyword == "RATELIMIT":
            assert error.response.headers.get("retry-after") == "60", error.response.headers
        assert balance(server, secret) == 1000 - spent, f"{keyword}: a failed generation must be refunded in full"

    rows = Backend("sqlite").ledger(server, key["id"])
    assert_ledger_adds_up(rows, 1000 - spent)
    refunds = [row.amount for row in rows if row.kind == "refund"]
    assert refunds == [2 * CORE] * len(failures), rows
    assert_no_problems(stability)


def test_core_refuses_an_input_image_before_any_call(imgproxy: ImgproxyFactory, stability: FakeStability) -> None:
    server = start(imgproxy, stability)
    image = f"data:image/png;base64,{base64.b64encode(INPUT_IMAGE).decode()}"
    error = sdk_refusal(
        lambda: sdk(server).images.generate(model="stable-image-core", prompt="x", extra_body={"images": [image]})
    )
    assert error.status_code == 400 and isinstance(error.body, dict) and error.body.get("param") == "image", error.body
    assert stability.generate_calls() == [], stability.summary()
    assert_no_problems(stability)
