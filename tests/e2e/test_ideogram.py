"""Ideogram 3.0 end to end (providers-2.md §12): the real binary with ``IDEOGRAM_BASE_URL``
pointed at :class:`fake_upstreams.FakeIdeogram`, driven by the official OpenAI Python SDK.

Each test checks both sides: the multipart form the fake received (path, ``Api-Key``, the exact
text parts, the remixed file) and what the SDK got (the fake's images, downloaded without the
key, and MagicPrompt's rewrite as ``revised_prompt``). The fake validates every call against
the documented fields and notes violations in ``fake.problems``, which every test asserts
empty. Metered keys pay the catalog's price per image by ``rendering_speed`` for the images
that came back, and get it all back when the call fails or every image is withheld.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import openai
import pytest
from conftest import ImgproxyFactory, Server
from fake_upstreams import FakeIdeogram, data_url, noise_png
from helpers import client
from test_catalog_truth import charged_for_two_of_four
from test_credits import MASTER_KEY, balance, create_key
from test_providers import assert_images, assert_no_problems

IDEOGRAM_KEY = "ideogram-e2e-key-0123456789abcdef"

# Credits per image by rendering_speed (imgproxy-core/catalog/ideogram.toml).
TURBO, DEFAULT, QUALITY = 30, 60, 90


@pytest.fixture
def ideogram() -> Iterator[FakeIdeogram]:
    with FakeIdeogram(IDEOGRAM_KEY) as fake:
        yield fake


def start(imgproxy: ImgproxyFactory, ideogram: FakeIdeogram) -> Server:
    return imgproxy.start(
        {"IDEOGRAM_API_KEY": IDEOGRAM_KEY, "IDEOGRAM_BASE_URL": ideogram.url, "IMGPROXY_MASTER_KEY": MASTER_KEY}
    )


def generate(server: Server, key: str = MASTER_KEY, **kwargs: Any) -> tuple[openai.types.ImagesResponse, dict[str, Any]]:
    """images.generate through the SDK with ``key``: the parsed response and the raw JSON body.
    The Ideogram key must show neither in the answer nor in the server's log."""
    raw = client(server.url, api_key=key).images.with_raw_response.generate(model="ideogram-v3", **kwargs)
    assert raw.status_code == 200, raw.text[:500]
    assert IDEOGRAM_KEY not in raw.text, "the Ideogram key leaked into the response"
    assert IDEOGRAM_KEY not in server.log(), "the Ideogram key was written to the log"
    return raw.parse(), json.loads(raw.text)


def failure(server: Server, key: str = MASTER_KEY, **kwargs: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        client(server.url, api_key=key).images.generate(model="ideogram-v3", **kwargs)
    return caught.value


def test_a_resolution_and_ideogram_params_go_as_the_exact_form(imgproxy: ImgproxyFactory, ideogram: FakeIdeogram) -> None:
    server = start(imgproxy, ideogram)
    prompt = "a poster that says HELLO"
    response, _ = generate(
        server,
        prompt=prompt,
        n=2,
        size="1312x736",  # type: ignore[arg-type] - one of Ideogram's resolutions
        extra_body={
            "rendering_speed": "TURBO",
            "magic_prompt": "ON",
            "style_type": "DESIGN",
            "negative_prompt": "blurry",
            "seed": 7,
        },
    )
    (call,) = ideogram.api_calls()
    assert call.path == "/v1/ideogram-v3/generate", ideogram.summary()
    assert call.headers.get("api-key") == IDEOGRAM_KEY
    assert call.form == {
        "prompt": prompt,
        "num_images": "2",
        "resolution": "1312x736",
        "rendering_speed": "TURBO",
        "magic_prompt": "ON",
        "style_type": "DESIGN",
        "negative_prompt": "blurry",
        "seed": "7",
    }, call.part_summary()
    assert call.files == []
    assert len(ideogram.download_calls()) == 2, "each image URL is downloaded once, at once"
    assert_no_problems(ideogram)
    assert_images(response, ideogram.images)
    assert response.data is not None
    assert {image.revised_prompt for image in response.data} == {f"{prompt}, vivid poster art with crisp lettering"}


def test_an_aspect_ratio_is_written_like_16x9(imgproxy: ImgproxyFactory, ideogram: FakeIdeogram) -> None:
    server = start(imgproxy, ideogram)
    response, _ = generate(server, prompt="a wide harbour", extra_body={"aspect_ratio": "16:9", "magic_prompt": "OFF"})
    (call,) = ideogram.api_calls()
    assert call.form == {
        "prompt": "a wide harbour",
        "num_images": "1",
        "aspect_ratio": "16x9",
        "rendering_speed": "DEFAULT",
        "magic_prompt": "OFF",
    }, call.part_summary()
    assert_no_problems(ideogram)
    assert_images(response, ideogram.images)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"size": "1024x1024", "extra_body": {"aspect_ratio": "1:1"}}, "aspect_ratio"),
        ({"size": "1536x1024"}, "size"),
        ({"extra_body": {"aspect_ratio": "21:9"}}, "aspect_ratio"),
        ({"quality": "high"}, "quality"),
        ({"n": 9}, "n"),
    ],
)
def test_what_ideogram_cannot_take_is_400_without_an_upstream_call(
    imgproxy: ImgproxyFactory, ideogram: FakeIdeogram, fields: dict[str, Any], param: str
) -> None:
    server = start(imgproxy, ideogram)
    error = failure(server, prompt="a lighthouse", **fields)
    assert error.status_code == 400 and isinstance(error.body, dict), error
    assert error.body.get("param") == param, error.body
    assert ideogram.requests == [], f"a refused request must not reach Ideogram: {ideogram.summary()}"


def test_a_reference_image_is_remixed(imgproxy: ImgproxyFactory, ideogram: FakeIdeogram) -> None:
    server = start(imgproxy, ideogram)
    reference = noise_png(24, seed=5)
    response, _ = generate(
        server,
        prompt="the same scene at night",
        extra_body={"images": [data_url(reference)], "image_weight": 30, "aspect_ratio": "3:2"},
    )
    (call,) = ideogram.api_calls()
    assert call.path == "/v1/ideogram-v3/remix", ideogram.summary()
    assert call.form == {
        "prompt": "the same scene at night",
        "num_images": "1",
        "aspect_ratio": "3x2",
        "image_weight": "30",
        "rendering_speed": "DEFAULT",
    }, call.part_summary()
    (image,) = call.files
    assert (image.name, image.content_type, image.data) == ("image", "image/png", reference), call.part_summary()
    assert_no_problems(ideogram)
    assert_images(response, ideogram.images)


def test_metered_keys_pay_by_rendering_speed_and_get_failures_back(imgproxy: ImgproxyFactory, ideogram: FakeIdeogram) -> None:
    server = start(imgproxy, ideogram)
    _, secret = create_key(server, credits=1000)
    spent = 0
    for n, speed, price in ((2, "TURBO", TURBO), (1, "QUALITY", QUALITY), (1, None, DEFAULT)):
        extra = {"rendering_speed": speed} if speed else {}
        _, body = generate(server, secret, prompt=f"a price tag #{n}{speed}", n=n, extra_body=extra)
        assert body.get("credits_used") == n * price, body.get("credits_used")
        spent += n * price
        assert balance(server, secret) == 1000 - spent

    # A failure, a refusal and every image withheld cost nothing.
    for prompt, status, code in (
        ("FAIL500 a broken press", 502, None),
        ("GARBAGE a torn page", 502, None),
        ("MODERATE something refused", 400, "moderation_blocked"),
        ("UNSAFEIMG one image, withheld", 400, "moderation_blocked"),
    ):
        error = failure(server, secret, prompt=prompt, extra_body={"rendering_speed": "QUALITY"})
        assert error.status_code == status, (prompt, error)
        if code:
            assert error.code == code, (prompt, error.body)
        assert balance(server, secret) == 1000 - spent, f"{prompt!r} was charged"
    assert_no_problems(ideogram)


def test_withheld_images_are_dropped_and_not_charged(imgproxy: ImgproxyFactory, ideogram: FakeIdeogram) -> None:
    server = start(imgproxy, ideogram)
    body = {"model": "ideogram-v3", "prompt": "UNSAFEIMG four posters", "n": 4, "rendering_speed": "TURBO"}
    charged_for_two_of_four(server, body, initial=500, price=TURBO)
    (call,) = ideogram.api_calls()
    assert call.form["num_images"] == "4", call.part_summary()
    assert len(ideogram.download_calls()) == 2, "withheld images have no URL to fetch"
    assert_no_problems(ideogram)
