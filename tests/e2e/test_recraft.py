"""Recraft's direct API end to end (providers-2.md §13): the real binary with
``RECRAFT_BASE_URL`` pointed at :class:`fake_upstreams.FakeRecraft`, driven by the official
OpenAI Python SDK.

Each test checks both sides: what the fake received (path, ``Authorization: Bearer`` with the
configured token, the exact JSON body or multipart form, result downloads without the token)
and what the SDK got (the upstream's PNG or SVG, intact). The fake notes every request that
breaks the wire format in ``fake.problems``, which every test asserts empty. Metered keys are
charged the catalog's price (imgproxy-core/catalog/recraft.toml) and refunded on a failure.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Iterator

import openai
import pytest
from conftest import ImgproxyFactory, Server
from fake_upstreams import FakeRecraft, Recorded, data_url, is_svg, noise_png
from helpers import client, http
from test_credits import MASTER_KEY, Backend, assert_ledger_adds_up, balance, create_key
from test_providers import assert_no_problems, decode

RECRAFT_TOKEN = "rc-e2e-token-0123456789abcdef"
PHOTO = noise_png(64, seed=3)

# Prices in credits per image, from imgproxy-core/catalog/recraft.toml.
RECRAFT_V4_1 = 35
VECTORIZE = 10


@pytest.fixture
def recraft() -> Iterator[FakeRecraft]:
    with FakeRecraft(RECRAFT_TOKEN) as fake:
        yield fake


def start(imgproxy: ImgproxyFactory, recraft: FakeRecraft, **env: str) -> Server:
    return imgproxy.start({"RECRAFT_API_TOKEN": RECRAFT_TOKEN, "RECRAFT_BASE_URL": f"{recraft.url}/v1", **env})


def raw_generate(sdk: openai.OpenAI, server: Server, **kwargs: Any) -> Any:
    """images.generate through the SDK, raw; also checks that the token leaked nowhere."""
    raw = sdk.images.with_raw_response.generate(**kwargs)
    assert raw.status_code == 200, raw.text[:500]
    assert RECRAFT_TOKEN not in raw.text, "the Recraft token leaked into the response"
    assert RECRAFT_TOKEN not in server.log(), "the Recraft token was written to the log"
    return raw


def one_generation(recraft: FakeRecraft) -> dict[str, Any]:
    """The body of the one generation call the fake got, after checking its token."""
    calls = recraft.generation_calls()
    assert len(calls) == 1, recraft.summary()
    assert calls[0].headers.get("authorization") == f"Bearer {RECRAFT_TOKEN}"
    assert calls[0].headers.get("content-type", "").startswith("application/json")
    return json.loads(calls[0].body)


def one_tool_call(recraft: FakeRecraft, endpoint: str) -> Recorded:
    calls = recraft.calls("POST", f"/v1/images/{endpoint}")
    assert len(calls) == 1, recraft.summary()
    assert calls[0].headers.get("authorization") == f"Bearer {RECRAFT_TOKEN}"
    return calls[0]


def assert_sent_one_file(call: Recorded, image: bytes) -> None:
    """The tool got the image as its one ``file`` part, typed and named, and
    ``response_format=url``, nothing else."""
    summary = [(p.name, p.filename, p.content_type) for p in call.parts]
    assert summary == [("file", "image.png", "image/png"), ("response_format", None, None)], call.part_summary()
    assert call.part("file").data == image, "the image was not passed on intact"
    assert call.form == {"response_format": "url"}


# ------------------------------------------------------------------------------------------
# generation
# ------------------------------------------------------------------------------------------


def test_v4_1_sends_the_documented_body_and_returns_the_downloaded_images(
    imgproxy: ImgproxyFactory, recraft: FakeRecraft
) -> None:
    server = start(imgproxy, recraft)
    raw = raw_generate(client(server.url), server, model="recraft-v4.1", prompt="two race cars", n=2, size="1280x832")

    body = one_generation(recraft)
    assert body == {
        "model": "recraftv4_1",
        "prompt": "two race cars",
        "n": 2,
        "size": "1280x832",
        "response_format": "url",
    }, body
    assert len(recraft.download_calls()) == 2, recraft.summary()
    response = raw.parse()
    assert [decode(image) for image in response.data or []] == recraft.images, "the SDK did not get Recraft's images"
    assert_no_problems(recraft)


def test_v3_takes_style_substyle_and_a_ratio(imgproxy: ImgproxyFactory, recraft: FakeRecraft) -> None:
    server = start(imgproxy, recraft)
    extra = {"style": "digital_illustration", "substyle": "pixel_art", "aspect_ratio": "16:9"}
    raw_generate(client(server.url), server, model="recraft-v3", prompt="a castle", extra_body=extra)

    body = one_generation(recraft)
    assert body == {
        "model": "recraftv3",
        "prompt": "a castle",
        "n": 1,
        "size": "16:9",
        "style": "digital_illustration",
        "substyle": "pixel_art",
        "response_format": "url",
    }, body
    assert_no_problems(recraft)


def test_a_style_on_v4_is_400_naming_it_without_an_upstream_call(imgproxy: ImgproxyFactory, recraft: FakeRecraft) -> None:
    server = start(imgproxy, recraft)
    with pytest.raises(openai.BadRequestError) as caught:
        client(server.url).images.generate(model="recraft-v4.1", prompt="a castle", extra_body={"style": "any"})
    assert isinstance(caught.value.body, dict) and caught.value.body.get("param") == "style", caught.value.body
    assert recraft.requests == [], recraft.summary()


def test_a_vector_model_returns_the_svg_document(imgproxy: ImgproxyFactory, recraft: FakeRecraft) -> None:
    server = start(imgproxy, recraft)
    sdk = client(server.url)
    raw = raw_generate(sdk, server, model="recraft-v4.1-vector", prompt="a fox logo")
    assert json.loads(raw.content).get("output_format") == "svg"
    svg = decode((raw.parse().data or [])[0])
    assert is_svg(svg) and svg == recraft.images[0], f"not Recraft's SVG: {svg[:120]!r}"
    assert one_generation(recraft)["model"] == "recraftv4_1_vector"

    # As a URL, imgproxy serves the stored SVG as such.
    response = sdk.images.generate(model="recraft-v4.1-vector", prompt="a key icon", response_format="url")
    url = (response.data or [])[0].url
    assert url, response
    status, headers, served = http("GET", url)
    assert status == 200 and headers.get("content-type", "").startswith("image/svg+xml"), headers
    assert served == recraft.images[1]
    assert_no_problems(recraft)


# ------------------------------------------------------------------------------------------
# tools: vectorize and remove background
# ------------------------------------------------------------------------------------------


def test_vectorize_through_an_sdk_edit_sends_one_file_part_and_returns_svg(
    imgproxy: ImgproxyFactory, recraft: FakeRecraft
) -> None:
    server = start(imgproxy, recraft)
    response = client(server.url).images.edit(model="vectorize", image=("logo.png", PHOTO, "image/png"), prompt="vectorize")

    assert_sent_one_file(one_tool_call(recraft, "vectorize"), PHOTO)
    assert recraft.generation_calls() == []
    svg = decode((response.data or [])[0])
    assert is_svg(svg) and svg == recraft.images[0]
    assert_no_problems(recraft)


def test_remove_background_sends_one_file_part_and_reports_transparency(
    imgproxy: ImgproxyFactory, recraft: FakeRecraft
) -> None:
    server = start(imgproxy, recraft)
    raw = raw_generate(
        client(server.url), server, model="recraft-remove-background", prompt="cut out", extra_body={"images": [data_url(PHOTO)]}
    )

    assert_sent_one_file(one_tool_call(recraft, "removeBackground"), PHOTO)
    answer = json.loads(raw.content)
    assert answer.get("background") == "transparent", answer.get("background")
    assert base64.b64decode(answer["data"][0]["b64_json"]) == recraft.images[0]
    assert_no_problems(recraft)


# ------------------------------------------------------------------------------------------
# credits and failures
# ------------------------------------------------------------------------------------------


def test_credits_are_the_catalog_price_and_failures_are_refunded(imgproxy: ImgproxyFactory, recraft: FakeRecraft) -> None:
    server = start(imgproxy, recraft, IMGPROXY_MASTER_KEY=MASTER_KEY)
    key, secret = create_key(server, credits=200)
    sdk = client(server.url, api_key=secret)

    raw = raw_generate(sdk, server, model="recraft-v4.1", prompt="a lighthouse", n=2)
    assert json.loads(raw.content).get("credits_used") == 2 * RECRAFT_V4_1
    assert raw.headers.get("x-credits-remaining") == str(200 - 2 * RECRAFT_V4_1)

    raw = sdk.images.with_raw_response.edit(model="vectorize", image=("logo.png", PHOTO, "image/png"), prompt="vectorize")
    assert json.loads(raw.content).get("credits_used") == VECTORIZE
    paid = 200 - 2 * RECRAFT_V4_1 - VECTORIZE
    assert balance(server, secret) == paid

    # A server failure, the content refusal and a spent Recraft account: each refunded in full.
    failures = [
        ("a lighthouse FAIL500", openai.InternalServerError, None),
        ("a lighthouse MODERATE", openai.BadRequestError, "moderation_blocked"),
        ("a lighthouse NOCREDIT", openai.InternalServerError, None),
    ]
    for prompt, error, code in failures:
        with pytest.raises(error) as caught:
            sdk.images.generate(model="recraft-v4.1", prompt=prompt, n=2)
        if code:
            assert isinstance(caught.value.body, dict) and caught.value.body.get("code") == code, caught.value.body
        assert balance(server, secret) == paid, f"{prompt}: a failed request must give back what it reserved"

    rows = Backend("sqlite").ledger(server, key["id"])
    assert_ledger_adds_up(rows, paid)
    refunds = [row for row in rows if row.kind == "refund"]
    assert [row.amount for row in refunds] == [2 * RECRAFT_V4_1] * len(failures), rows
    assert len(recraft.generation_calls()) == 1 + len(failures), recraft.summary()
    assert_no_problems(recraft)
