"""POST /v1/images/edits end to end: the real binary driven by the official OpenAI SDK (multipart,
as openai-python sends it) and by raw HTTP (the JSON variant, hand-built forms for what the SDK
cannot send), with the OpenAI provider pointed at tests/e2e/fake_openai.py, which parses and
records every part it receives.

Each test checks both sides: what the upstream got (one multipart request, the image bytes
intact in ``image[]`` parts in order, the ``mask`` part, text parts typed as decimal strings, no
``response_format``) and what the client got (the upstream's images, OpenAI's error envelope
naming the offending parameter, no upstream call for a refused request).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server
from fake_openai import DEFAULT_USAGE, FakeOpenAI, RecordedRequest, encode_png, solid_png
from fake_upstreams import FakeBfl, FakeGemini, FakeServer, data_url, noise_png
from helpers import FormValue, assert_error_envelope, client, http, multipart, raw_post
from imaging import PNG_SIGNATURE, jpeg_size, parse_png, parse_webp

BFL_KEY = "bfl-e2e-key-0123456789"
GEMINI_KEY = "gm-e2e-key-0123456789"

# The limits of the error-case server: each image (and the mask) at most IMAGE_LIMIT bytes,
# the whole body at most BODY_LIMIT.
IMAGE_LIMIT = 50_000
BODY_LIMIT = 150_000

# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def decode(image: openai.types.Image) -> bytes:
    assert image.b64_json, f"image has no b64_json: {image}"
    return base64.b64decode(image.b64_json, validate=True)


def mask_png(size: int) -> bytes:
    """An RGBA mask: the left half fully transparent (the area to edit), the right opaque."""
    return encode_png(size, size, lambda x, y: (0, 0, 0, 0) if x < size // 2 else (255, 255, 255, 255), alpha=True)


def post_form(server: Server, fields: list[tuple[str, FormValue]]) -> tuple[int, dict[str, str], bytes]:
    body, content_type = multipart(fields)
    return raw_post(f"{server.url}/v1/images/edits", body, {"Content-Type": content_type})


def post_json(server: Server, body: Any) -> tuple[int, dict[str, str], bytes]:
    return http("POST", f"{server.url}/v1/images/edits", json_body=body, timeout=60)


def png_file(data: bytes, name: str = "image.png") -> tuple[str, bytes, str]:
    return (name, data, "image/png")


def one_edit(fake: FakeOpenAI) -> RecordedRequest:
    """The one request the fake received, which must be a multipart POST /v1/images/edits."""
    assert len(fake.requests) == 1, f"expected exactly one upstream call, got {[(r.method, r.path) for r in fake.requests]}"
    (request,) = fake.edit_requests()
    assert request.method == "POST" and request.path == "/v1/images/edits", (request.method, request.path)
    assert request.headers.get("authorization") == f"Bearer {OPENAI_TEST_KEY}"
    assert request.is_multipart, f"the upstream edit is not multipart/form-data: {request.headers.get('content-type')!r}"
    assert fake.problems == [], fake.problems
    return request


def images_sent(request: RecordedRequest) -> list[bytes]:
    """The image files of an upstream edit, in order; imgproxy names every one `image[]`."""
    names = [p.name for p in request.files]
    assert "image" not in names, f"imgproxy sends references as `image[]`, not `image`: {request.part_summary()}"
    return [p.data for p in request.parts_named("image[]")]


def assert_sdk_error(caught: pytest.ExceptionInfo[openai.APIStatusError], status: int, param: str) -> None:
    """The SDK's error is ``status`` with OpenAI's envelope naming ``param``."""
    response = caught.value.response
    assert_error_envelope(
        response.status_code,
        {k.lower(): v for k, v in response.headers.items()},
        response.content,
        expected_status=status,
        param=param,
    )
    assert caught.value.param == param


def assert_no_problems(*fakes: FakeServer) -> None:
    for fake in fakes:
        assert fake.problems == [], f"{type(fake).__name__}: {fake.problems}; requests: {fake.summary()}"


def strings_of(value: Any, skip_longer_than: int = 200) -> Iterator[str]:
    """Every key and short string in a JSON value (long strings are image data)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_of(item, skip_longer_than)
    elif isinstance(value, list):
        for item in value:
            yield from strings_of(item, skip_longer_than)
    elif isinstance(value, str) and len(value) <= skip_longer_than:
        yield value


IMAGE_A = noise_png(32, seed=1)
IMAGE_B = noise_png(32, seed=2)
MASK = mask_png(32)

# ------------------------------------------------------------------------------------------
# OpenAI provider: what the upstream receives
# ------------------------------------------------------------------------------------------


def test_sdk_edit_sends_one_multipart_edit_with_the_image_intact(
    openai_server: Server, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(IMAGE_A)
    prompt = "put a small red boat on the lake"
    with open(path, "rb") as image:
        raw = client(openai_server.url).images.with_raw_response.edit(model="gpt-image-2", image=image, prompt=prompt)
    assert raw.status_code == 200, raw.text[:500]
    assert OPENAI_TEST_KEY not in raw.text
    response = raw.parse()

    upstream = one_edit(fake_openai)
    assert fake_openai.image_requests() == [], "an edit must go to /images/edits, not /images/generations"
    assert images_sent(upstream) == [IMAGE_A], f"the image bytes were not passed on intact: {upstream.part_summary()}"
    image_part = upstream.part("image[]")
    assert image_part.content_type == "image/png", image_part.headers
    assert image_part.filename, "a file part needs a filename"
    assert upstream.part("model").text == "gpt-image-2"
    assert upstream.part("prompt").text == prompt
    assert "response_format" not in upstream.form, f"GPT image models reject response_format: {upstream.part_summary()}"
    assert upstream.parts_named("mask") == []

    assert response.data is not None and len(response.data) == 1
    assert decode(response.data[0]) == fake_openai.images[0], "the SDK did not get the upstream's image"
    assert response.usage is not None and response.usage.to_dict() == DEFAULT_USAGE


def test_two_images_reach_the_upstream_as_two_image_parts_in_order(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    response = client(openai_server.url).images.edit(
        model="gpt-image-2",
        image=[png_file(IMAGE_A, "first.png"), png_file(IMAGE_B, "second.png")],
        prompt="combine the two scenes",
    )
    upstream = one_edit(fake_openai)
    assert images_sent(upstream) == [IMAGE_A, IMAGE_B], f"images out of order or altered: {upstream.part_summary()}"
    assert response.data is not None and [decode(i) for i in response.data] == fake_openai.images[:1]


def test_a_mask_reaches_the_upstream_as_a_mask_part(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    response = client(openai_server.url).images.edit(
        model="gpt-image-2",
        image=png_file(IMAGE_A, "room.png"),
        mask=png_file(MASK, "mask.png"),
        prompt="a window in the left wall",
    )
    upstream = one_edit(fake_openai)
    assert images_sent(upstream) == [IMAGE_A]
    mask_part = upstream.part("mask")
    assert mask_part.data == MASK, "the mask bytes were not passed on intact"
    assert mask_part.content_type == "image/png" and mask_part.filename, mask_part.headers
    assert response.data is not None and decode(response.data[0]) == fake_openai.images[0]


def test_numbers_and_enums_as_text_parts_reach_the_upstream_typed_and_n_2_gives_two_images(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    response = client(openai_server.url).images.edit(
        model="gpt-image-2",
        image=png_file(IMAGE_A, "shoe.png"),
        prompt="the shoe on a marble plinth",
        n=2,
        size="1024x1536",
        quality="low",
        background="opaque",
        output_format="jpeg",
        output_compression=80,
        extra_body={"moderation": "low"},
    )
    form = one_edit(fake_openai).form
    expected = {
        "model": "gpt-image-2",
        "n": "2",
        "size": "1024x1536",
        "quality": "low",
        "background": "opaque",
        "output_format": "jpeg",
        "output_compression": "80",
        "moderation": "low",
    }
    assert {k: form.get(k) for k in expected} == expected, f"text parts as the upstream got them: {form}"
    assert "response_format" not in form
    assert response.data is not None and len(response.data) == 2, response
    images = [decode(image) for image in response.data]
    assert images[0] != images[1]
    for data in images:
        # the upstream's PNG, or a JPEG made from it (output_format=jpeg)
        if data[:8] == PNG_SIGNATURE:
            assert data in fake_openai.images
        else:
            assert jpeg_size(data) == (16, 16)


def test_a_text_part_of_the_wrong_type_is_400_naming_it(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    for name, value in [("n", "two"), ("n", "1.5"), ("output_compression", "high")]:
        status, headers, body = post_form(
            openai_server,
            [("model", "gpt-image-2"), ("prompt", "p"), (name, value), ("image[]", png_file(IMAGE_A))],
        )
        assert_error_envelope(status, headers, body, expected_status=400, param=name)
    assert fake_openai.requests == [], "a refused edit must not reach the upstream"


def test_sdk_response_format_url_is_served_by_imgproxy_and_not_sent_upstream(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    response = client(openai_server.url).images.edit(
        model="gpt-image-2", image=png_file(IMAGE_A, "a.png"), prompt="a hat", response_format="url"
    )
    assert "response_format" not in one_edit(fake_openai).form
    assert response.data is not None and response.data[0].url, response
    status, headers, data = http("GET", response.data[0].url)
    assert status == 200 and headers.get("content-type") == "image/png"
    assert data == fake_openai.images[0]


# ------------------------------------------------------------------------------------------
# the JSON variant and file ids
# ------------------------------------------------------------------------------------------


def test_json_edit_with_data_urls_and_a_mask_works_like_multipart(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    prompt = "a lantern on the table"
    status, _, raw = post_json(
        openai_server,
        {
            "model": "gpt-image-2",
            "prompt": prompt,
            "images": [{"image_url": data_url(IMAGE_A)}, {"image_url": data_url(IMAGE_B)}],
            "mask": {"image_url": data_url(MASK)},
        },
    )
    assert status == 200, raw[:500]
    upstream = one_edit(fake_openai)
    assert images_sent(upstream) == [IMAGE_A, IMAGE_B], upstream.part_summary()
    assert upstream.part("mask").data == MASK
    assert upstream.part("prompt").text == prompt and upstream.part("model").text == "gpt-image-2"
    assert "response_format" not in upstream.form
    body = json.loads(raw)
    assert [base64.b64decode(item["b64_json"]) for item in body["data"]] == fake_openai.images[:1]


def test_json_edit_takes_a_file_id(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    sdk = client(openai_server.url)
    uploaded = sdk.files.create(file=("room.png", IMAGE_B, "image/png"), purpose="vision")
    status, _, raw = post_json(
        openai_server, {"model": "gpt-image-2", "prompt": "paint it blue", "images": [{"file_id": uploaded.id}]}
    )
    assert status == 200, raw[:500]
    assert images_sent(one_edit(fake_openai)) == [IMAGE_B], "the file's bytes must be the edited image"
    assert base64.b64decode(json.loads(raw)["data"][0]["b64_json"]) == fake_openai.images[0]


# ------------------------------------------------------------------------------------------
# refusals: each a 400 (or 413) envelope, and no upstream call
# ------------------------------------------------------------------------------------------


@pytest.fixture
def limited_server(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> Server:
    return imgproxy.start(
        {
            "OPENAI_API_KEY": OPENAI_TEST_KEY,
            "OPENAI_BASE_URL": f"{fake_openai.url}/v1",
            "IMGPROXY_FETCH_MAX_BYTES": str(IMAGE_LIMIT),
            "IMGPROXY_MAX_BODY_BYTES": str(BODY_LIMIT),
        }
    )


BIG = noise_png(142, seed=5)  # ~60 kB: over IMAGE_LIMIT
NEAR_LIMIT = [noise_png(125, seed=10 + i) for i in range(4)]  # ~47 kB each: under IMAGE_LIMIT, together over BODY_LIMIT
assert len(BIG) > IMAGE_LIMIT and all(len(x) < IMAGE_LIMIT for x in NEAR_LIMIT) and sum(map(len, NEAR_LIMIT)) > BODY_LIMIT

FORM_REFUSALS: dict[str, tuple[list[tuple[str, FormValue]], int, str | None]] = {
    "image-over-the-image-limit": (
        [("model", "gpt-image-2"), ("prompt", "p"), ("image[]", png_file(BIG))], 400, "image"),
    "single-image-field-over-the-limit": (
        [("model", "gpt-image-2"), ("prompt", "p"), ("image", png_file(BIG))], 400, "image"),
    "mask-over-the-image-limit": (
        [("model", "gpt-image-2"), ("prompt", "p"), ("image[]", png_file(IMAGE_A)), ("mask", png_file(BIG, "mask.png"))],
        400,
        "mask",
    ),
    "missing-prompt": ([("model", "gpt-image-2"), ("image[]", png_file(IMAGE_A))], 400, "prompt"),
    "no-image": ([("model", "gpt-image-2"), ("prompt", "p")], 400, "image"),
    "five-images-on-the-placeholder": (
        [("model", "placeholder"), ("prompt", "p"), ("size", "64x64")]
        + [("image[]", png_file(solid_png(i), f"{i}.png")) for i in range(5)],
        400,
        "image",
    ),
    "mask-on-the-placeholder": (
        [("model", "placeholder"), ("prompt", "p"), ("size", "64x64"), ("image[]", png_file(IMAGE_A)), ("mask", png_file(MASK, "mask.png"))],
        400,
        "mask",
    ),
    "text-file-as-image": (
        [("model", "gpt-image-2"), ("prompt", "p"), ("image[]", ("notes.txt", b"hello, not an image\n", "text/plain"))],
        400,
        "image",
    ),
    "html-declared-as-png": (
        [("model", "gpt-image-2"), ("prompt", "p"), ("image[]", ("page.png", b"<html><body>hi</body></html>", "image/png"))],
        400,
        "image",
    ),
    "body-over-the-body-limit": (
        [("model", "gpt-image-2"), ("prompt", "p")] + [("image[]", png_file(x, f"{i}.png")) for i, x in enumerate(NEAR_LIMIT)],
        413,
        None,
    ),
}


@pytest.mark.parametrize("case", list(FORM_REFUSALS))
def test_multipart_refusals_name_the_parameter_without_an_upstream_call(
    limited_server: Server, fake_openai: FakeOpenAI, case: str
) -> None:
    fields, expected_status, param = FORM_REFUSALS[case]
    status, headers, body = post_form(limited_server, fields)
    if param is None:
        assert_error_envelope(status, headers, body, expected_status=expected_status)
    else:
        assert_error_envelope(status, headers, body, expected_status=expected_status, param=param)
    assert fake_openai.requests == [], f"a refused edit reached the upstream: {[r.path for r in fake_openai.requests]}"


JSON_REFUSALS: dict[str, tuple[dict[str, Any], int, str | None]] = {
    "image-over-the-image-limit": (
        {"model": "gpt-image-2", "prompt": "p", "images": [{"image_url": data_url(BIG)}]}, 400, "image"),
    "mask-over-the-image-limit": (
        {"model": "gpt-image-2", "prompt": "p", "images": [{"image_url": data_url(IMAGE_A)}], "mask": {"image_url": data_url(BIG)}},
        400,
        "mask",
    ),
    "missing-prompt": ({"model": "gpt-image-2", "images": [{"image_url": data_url(IMAGE_A)}]}, 400, "prompt"),
    "no-image": ({"model": "gpt-image-2", "prompt": "p"}, 400, "image"),
    "empty-images": ({"model": "gpt-image-2", "prompt": "p", "images": []}, 400, "image"),
    "five-images-on-the-placeholder": (
        {"model": "placeholder", "prompt": "p", "size": "64x64", "images": [{"image_url": data_url(solid_png(i))} for i in range(5)]},
        400,
        "image",
    ),
    "mask-on-the-placeholder": (
        {"model": "placeholder", "prompt": "p", "size": "64x64", "images": [{"image_url": data_url(IMAGE_A)}], "mask": {"image_url": data_url(MASK)}},
        400,
        "mask",
    ),
    "text-as-image": (
        {"model": "gpt-image-2", "prompt": "p", "images": [{"image_url": data_url(b"hello", "text/plain")}]}, 400, "image"),
    "html-as-a-png-data-url": (
        {"model": "gpt-image-2", "prompt": "p", "images": [{"image_url": data_url(b"<html><body>hi</body></html>")}]},
        400,
        "image",
    ),
    "unknown-file-id": ({"model": "gpt-image-2", "prompt": "p", "images": [{"file_id": "file-doesnotexist"}]}, None, "image"),
    "body-over-the-body-limit": (
        {"model": "gpt-image-2", "prompt": "p", "images": [{"image_url": data_url(x)} for x in NEAR_LIMIT[:3]]}, 413, None),
}


@pytest.mark.parametrize("case", list(JSON_REFUSALS))
def test_json_refusals_name_the_parameter_without_an_upstream_call(
    limited_server: Server, fake_openai: FakeOpenAI, case: str
) -> None:
    body, expected_status, param = JSON_REFUSALS[case]
    payload = json.dumps(body).encode()
    status, headers, raw = raw_post(f"{limited_server.url}/v1/images/edits", payload, {"Content-Type": "application/json"})
    if expected_status is None:  # an unknown file id: 404, or 400 naming the image
        error = assert_error_envelope(status, headers, raw, expected_status=status)
        assert status == 404 or (status == 400 and error["param"] == "image"), f"{status} {error}"
    elif param is None:
        assert_error_envelope(status, headers, raw, expected_status=expected_status)
    else:
        assert_error_envelope(status, headers, raw, expected_status=expected_status, param=param)
    assert fake_openai.requests == [], f"a refused edit reached the upstream: {[r.path for r in fake_openai.requests]}"


def test_sdk_refusals_raise_bad_request_naming_the_parameter(
    limited_server: Server, fake_openai: FakeOpenAI
) -> None:
    sdk = client(limited_server.url)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "gpt-image-2", "image": ("big.png", BIG, "image/png")}, "image"),
        ({"model": "gpt-image-2", "image": ("a.png", IMAGE_A, "image/png"), "mask": ("m.png", BIG, "image/png")}, "mask"),
        ({"model": "placeholder", "image": [(f"{i}.png", solid_png(i), "image/png") for i in range(5)]}, "image"),
        ({"model": "placeholder", "image": ("a.png", IMAGE_A, "image/png"), "mask": ("m.png", MASK, "image/png")}, "mask"),
        ({"model": "gpt-image-2", "image": ("notes.txt", b"just text", "text/plain")}, "image"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.images.edit(prompt="p", **kwargs)
        assert_sdk_error(caught, 400, param)
    assert fake_openai.requests == [], f"a refused edit reached the upstream: {[r.path for r in fake_openai.requests]}"


# ------------------------------------------------------------------------------------------
# the placeholder model (no provider at all)
# ------------------------------------------------------------------------------------------


def test_placeholder_edits_mix_the_images_into_the_drawing(server: Server) -> None:
    sdk = client(server.url)

    def edit(image: bytes, seed: int = 7) -> bytes:
        response = sdk.images.edit(
            model="placeholder", image=("in.png", image, "image/png"), prompt="a lighthouse", size="64x64",
            extra_body={"seed": seed},
        )
        assert response.data is not None and len(response.data) == 1
        data = decode(response.data[0])
        png = parse_png(data)
        assert (png.width, png.height) == (64, 64)
        return data

    with_a, with_b = edit(IMAGE_A), edit(IMAGE_B)
    assert with_a != with_b, "two different input images gave the same output: the images were not used"
    assert edit(IMAGE_A) == with_a, "the same seeded edit must give the same image"
    plain = sdk.images.generate(model="placeholder", prompt="a lighthouse", size="64x64", extra_body={"seed": 7})
    assert plain.data is not None and decode(plain.data[0]) not in (with_a, with_b), "an edit must differ from a generation"


def test_placeholder_edit_repeated_is_a_cache_hit(server: Server) -> None:
    sdk = client(server.url)
    request = dict(
        model="placeholder",
        image=[("a.png", IMAGE_A, "image/png"), ("b.png", IMAGE_B, "image/png")],
        prompt="two boats",
        size="64x64",
        n=2,
    )
    first = sdk.images.with_raw_response.edit(**request)
    assert first.status_code == 200 and first.headers.get("x-cache-status") == "MISS-GENERATED", first.headers
    second = sdk.images.with_raw_response.edit(**request)
    assert second.headers.get("x-cache-status") == "HIT", second.headers
    got_first, got_second = first.parse(), second.parse()
    assert got_first.data is not None and got_second.data is not None and len(got_first.data) == 2
    assert [decode(i) for i in got_first.data] == [decode(i) for i in got_second.data]

    # another image (or another order) is another entry
    swapped = dict(request, image=[("b.png", IMAGE_B, "image/png"), ("a.png", IMAGE_A, "image/png")])
    third = sdk.images.with_raw_response.edit(**swapped)
    assert third.headers.get("x-cache-status") == "MISS-GENERATED", "references in another order are another request"


# ------------------------------------------------------------------------------------------
# output conversion: a format the upstream cannot make
# ------------------------------------------------------------------------------------------


@pytest.fixture
def bfl() -> Iterator[FakeBfl]:
    with FakeBfl(BFL_KEY) as fake:
        yield fake


@pytest.fixture
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(GEMINI_KEY) as fake:
        yield fake


def assert_one_webp_of(response: openai.types.ImagesResponse, upstream_png: bytes) -> None:
    """The answer is one WebP image, of the upstream's PNG's size, and says so."""
    assert response.output_format == "webp", response
    assert response.data is not None and len(response.data) == 1
    webp = parse_webp(decode(response.data[0]))
    upstream = parse_png(upstream_png)
    assert (webp.width, webp.height) == (upstream.width, upstream.height)
    assert response.size == f"{webp.width}x{webp.height}", f"size {response.size!r} is not the image's real size"


def test_webp_on_flux_pro_1_1_is_converted_and_the_upstream_gets_its_default(
    imgproxy: ImgproxyFactory, bfl: FakeBfl
) -> None:
    server = imgproxy.start({"BFL_API_KEY": BFL_KEY, "BFL_BASE_URL": bfl.api_url})
    response = client(server.url).images.edit(
        model="flux-pro-1.1",
        image=("ref.png", IMAGE_A, "image/png"),
        prompt="the same bottle, studio light",
        size="1024x768",
        output_format="webp",
        # with an input image BFL takes safety_tolerance up to 2 only
        extra_body={"prompt_upsampling": True, "seed": 7, "safety_tolerance": 1},
    )
    assert_one_webp_of(response, bfl.samples[0])

    submits = bfl.submit_calls()
    assert [s.path for s in submits] == ["/v1/flux-pro-1.1"], bfl.summary()
    body = submits[0].json
    assert not any("webp" in s.lower() for s in strings_of(body)), f"webp was sent to an upstream that cannot make it: {body}"
    assert body.get("output_format") == "jpeg", f"the model's default output_format should be sent: {body}"
    # text parts typed by the model's catalog entry on their way to a JSON upstream
    assert body.get("prompt_upsampling") is True and body.get("seed") == 7 and body.get("safety_tolerance") == 1, body
    assert (body.get("width"), body.get("height")) == (1024, 768), body
    assert base64.b64decode(body.get("image_prompt") or "") == IMAGE_A, "the edited image must reach BFL as image_prompt"
    assert_no_problems(bfl)


def test_webp_on_nano_banana_is_converted_and_not_sent_to_gemini(imgproxy: ImgproxyFactory, gemini: FakeGemini) -> None:
    server = imgproxy.start({"GEMINI_API_KEY": GEMINI_KEY, "GEMINI_BASE_URL": gemini.url})
    response = client(server.url).images.edit(
        model="nano-banana", image=("ref.png", IMAGE_B, "image/png"), prompt="make it night", output_format="webp"
    )
    assert_one_webp_of(response, gemini.final_images[0])

    (call,) = gemini.generate_calls()
    body = call.json
    assert not any("webp" in s.lower() for s in strings_of(body)), f"webp was sent to Gemini: {body}"
    inline = [
        part.get("inlineData") or part.get("inline_data")
        for content in body["contents"]
        for part in content["parts"]
        if part.get("inlineData") or part.get("inline_data")
    ]
    assert [base64.b64decode(i["data"]) for i in inline] == [IMAGE_B], "the edited image must reach Gemini as inlineData"
    assert_no_problems(gemini)
