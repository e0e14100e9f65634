"""imgproxy driven by the official `openai` Python SDK, as a real client would use it.

The first half runs the offline `placeholder` model; the second half enables the OpenAI provider
against a fake upstream (tests/e2e/fake_openai.py) and checks what imgproxy sends upstream and
how it maps upstream answers and failures to what the SDK sees.
"""

from __future__ import annotations

import base64
import json

import blake3
import openai
import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server
from fake_openai import (
    DEFAULT_USAGE,
    FakeOpenAI,
    Reply,
    error_reply,
    moderation_blocked,
    rate_limited,
    server_error,
)
from helpers import client, http
from imaging import jpeg_size, parse_png, parse_webp

# ------------------------------------------------------------------------------------------
# placeholder model
# ------------------------------------------------------------------------------------------


def decode(image: openai.types.Image) -> bytes:
    assert image.b64_json, f"image has no b64_json: {image}"
    return base64.b64decode(image.b64_json, validate=True)


def download(url: str) -> tuple[int, dict[str, str], bytes]:
    return http("GET", url)


def test_b64_json_gives_n_distinct_valid_pngs_of_exactly_the_requested_size(base_url: str) -> None:
    response = client(base_url).images.generate(
        model="placeholder",
        prompt="a lighthouse at dusk, watercolour",
        n=2,
        size="512x512",
        response_format="b64_json",
    )
    assert response.data is not None and len(response.data) == 2
    assert all(image.url is None for image in response.data)
    images = [decode(image) for image in response.data]
    for image in images:
        png = parse_png(image)
        assert (png.width, png.height) == (512, 512)
    assert images[0] != images[1], "the n images of one request must differ"
    assert response.size == "512x512"
    assert response.output_format == "png"
    assert isinstance(response.created, int) and response.created > 1_600_000_000


def test_b64_json_is_the_default_response_format(base_url: str) -> None:
    response = client(base_url).images.generate(model="placeholder", prompt="a red kite", size="64x64")
    assert response.data is not None and len(response.data) == 1
    png = parse_png(decode(response.data[0]))
    assert (png.width, png.height) == (64, 64)


def test_same_prompt_and_seed_give_the_same_image_and_another_seed_does_not(base_url: str) -> None:
    sdk = client(base_url)

    def one(seed: int) -> bytes:
        response = sdk.images.generate(
            model="placeholder", prompt="a tidal pool", size="64x64", extra_body={"seed": seed}
        )
        assert response.data is not None
        return decode(response.data[0])

    assert one(42) == one(42)
    assert one(42) != one(43)


def test_url_response_downloads_the_same_png_as_b64_and_is_content_addressed(server: Server) -> None:
    sdk = client(server.url)
    request = dict(model="placeholder", prompt="a fox in the snow", size="128x128", extra_body={"seed": 7})
    by_url = sdk.images.generate(response_format="url", **request)
    by_b64 = sdk.images.generate(response_format="b64_json", **request)
    assert by_url.data is not None and by_b64.data is not None
    url = by_url.data[0].url
    assert url, f"response_format=url gave no url: {by_url}"
    assert by_url.data[0].b64_json is None
    assert url.startswith(f"{server.url}/"), f"image URL {url!r} is not an absolute URL under {server.url}"

    status, headers, body = download(url)
    assert status == 200, body[:300]
    assert headers.get("content-type") == "image/png"
    expected = decode(by_b64.data[0])
    assert body == expected, "the URL must serve the bytes of the same deterministic request"
    png = parse_png(body)
    assert (png.width, png.height) == (128, 128)
    assert blake3.blake3(body).hexdigest() in url, "image URLs are content-addressed (BLAKE3 of the bytes)"

    again = sdk.images.generate(response_format="url", **request)
    assert again.data is not None and again.data[0].url == url, "the same image must get the same URL"


def test_image_url_is_served_without_credentials_when_a_master_key_is_set(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": "mk-e2e-secret"})
    response = client(server.url, api_key="mk-e2e-secret").images.generate(
        model="placeholder", prompt="a harbour", size="64x64", response_format="url"
    )
    assert response.data is not None and response.data[0].url
    status, headers, body = download(response.data[0].url)
    assert status == 200, body[:300]
    assert headers.get("content-type") == "image/png"
    parse_png(body)


def test_image_url_still_serves_the_same_bytes_after_a_restart_on_the_same_data_dir(
    imgproxy: ImgproxyFactory,
) -> None:
    first = imgproxy.start()
    response = client(first.url).images.generate(
        model="placeholder", prompt="a cathedral", size="96x64", response_format="url"
    )
    assert response.data is not None and response.data[0].url
    url = response.data[0].url
    status, _, before = download(url)
    assert status == 200

    second = imgproxy.restart(first)
    assert second.url == first.url and second.data_dir == first.data_dir
    status, headers, after = download(url)
    assert status == 200, f"image URL {url} is gone after a restart: {after[:300]!r}"
    assert headers.get("content-type") == "image/png"
    assert after == before


@pytest.mark.parametrize(
    ("output_format", "content_type"), [("jpeg", "image/jpeg"), ("webp", "image/webp"), ("png", "image/png")]
)
def test_output_format_gives_a_real_file_of_that_format_and_size(
    base_url: str, output_format: str, content_type: str
) -> None:
    sdk = client(base_url)
    response = sdk.images.generate(
        model="placeholder", prompt="a field of poppies", size="192x128", output_format=output_format
    )
    assert response.output_format == output_format
    assert response.data is not None
    data = decode(response.data[0])
    if output_format == "jpeg":
        assert jpeg_size(data) == (192, 128)
    elif output_format == "webp":
        webp = parse_webp(data)
        assert (webp.width, webp.height) == (192, 128)
    else:
        png = parse_png(data)
        assert (png.width, png.height) == (192, 128)

    by_url = sdk.images.generate(
        model="placeholder",
        prompt="a field of poppies",
        size="192x128",
        output_format=output_format,
        response_format="url",
    )
    assert by_url.data is not None and by_url.data[0].url
    status, headers, body = download(by_url.data[0].url)
    assert status == 200
    assert headers.get("content-type") == content_type
    assert body == data


def test_transparent_png_has_an_alpha_channel_and_see_through_pixels(base_url: str) -> None:
    response = client(base_url).images.generate(
        model="placeholder", prompt="a sticker of a cat", size="64x64", background="transparent", output_format="png"
    )
    assert response.background == "transparent"
    assert response.data is not None
    png = parse_png(decode(response.data[0]), decode_pixels=True)
    assert png.color_type == 6, f"transparent PNG must be RGBA (IHDR colour type 6), got {png.color_type}"
    alphas = [png.pixel(x, y)[3] for y in range(png.height) for x in range(png.width)]
    assert min(alphas) == 0, "a transparent background leaves some pixels fully transparent"


def test_transparent_webp_has_alpha(base_url: str) -> None:
    response = client(base_url).images.generate(
        model="placeholder", prompt="a sticker of a dog", size="64x64", background="transparent", output_format="webp"
    )
    assert response.data is not None
    webp = parse_webp(decode(response.data[0]))
    assert (webp.width, webp.height) == (64, 64)
    assert webp.alpha, f"transparent WebP ({webp.kind}) must flag an alpha channel"


def test_opaque_png_has_no_see_through_pixels(base_url: str) -> None:
    response = client(base_url).images.generate(
        model="placeholder", prompt="a postcard", size="64x64", background="opaque"
    )
    assert response.background == "opaque"
    assert response.data is not None
    png = parse_png(decode(response.data[0]), decode_pixels=True)
    if png.has_alpha_channel:
        alphas = {png.pixel(x, y)[-1] for y in range(png.height) for x in range(png.width)}
        assert alphas == {255}, "an opaque image has no transparent pixels"
    else:
        assert not png.has_trns, "an opaque image has no tRNS transparency"


def test_models_list_has_placeholder_and_no_openai_model_without_an_api_key(base_url: str) -> None:
    models = list(client(base_url).models.list())
    ids = [model.id for model in models]
    assert "placeholder" in ids
    assert "gpt-image-2" not in ids, "OpenAI models are served only when OPENAI_API_KEY is set"
    for model in models:
        assert model.object == "model"
        assert isinstance(model.created, int)
        assert isinstance(model.owned_by, str)


def test_models_retrieve_placeholder_has_allowed_params_capabilities_pricing_and_schema(base_url: str) -> None:
    sdk = client(base_url)
    model = sdk.models.retrieve("placeholder")
    assert model.id == "placeholder"
    assert model.object == "model"
    assert model.created == 1767225600

    raw = sdk.models.with_raw_response.retrieve("placeholder")
    assert raw.status_code == 200
    body = json.loads(raw.text)
    for key in ("id", "object", "created", "owned_by", "allowedParams", "capabilities", "pricing", "provider", "aliases", "schema"):
        assert key in body, f"/v1/models/placeholder lacks {key!r}: {sorted(body)}"
    allowed = body["allowedParams"]
    assert "512x512" in allowed["supported_sizes"]
    assert "1024x1024" in allowed["supported_sizes"]
    assert allowed["max_n"] == 10
    assert "text-to-image" in body["capabilities"]
    assert body["provider"] == "placeholder"
    assert isinstance(body["pricing"], dict) and body["pricing"]
    assert isinstance(body["schema"], dict) and body["schema"]
    assert isinstance(body["aliases"], list)

    listed = json.loads(sdk.models.with_raw_response.list().text)
    assert listed["object"] == "list"
    entry = next(m for m in listed["data"] if m["id"] == "placeholder")
    assert entry["allowedParams"] == allowed


def test_models_retrieve_unknown_model_is_not_found(base_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(base_url).models.retrieve("no-such-model")
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"


def test_invalid_size_is_bad_request_naming_size(base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(base_url).images.generate(model="placeholder", prompt="p", size="13x13")
    error = caught.value
    # openai-python's `body` is the inner error object of the envelope
    assert isinstance(error.body, dict), error.body
    assert error.body["param"] == "size"
    assert error.param == "size"
    assert error.type == "invalid_request_error"
    assert error.message


def test_unknown_model_is_not_found_with_code_model_not_found(base_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(base_url).images.generate(model="no-such-model", prompt="p")
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "model_not_found"


def test_openai_model_without_api_key_is_not_found(base_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(base_url).images.generate(model="gpt-image-2", prompt="p")
    assert caught.value.code == "model_not_found"


def test_n_above_the_model_maximum_is_bad_request_naming_n(base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(base_url).images.generate(model="placeholder", prompt="p", n=11, size="16x16")
    assert caught.value.param == "n"
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "n"


def test_n_at_the_model_maximum_is_accepted(base_url: str) -> None:
    response = client(base_url).images.generate(model="placeholder", prompt="p", n=10, size="16x16")
    assert response.data is not None and len(response.data) == 10
    assert len({image.b64_json for image in response.data}) == 10


# ------------------------------------------------------------------------------------------
# OpenAI provider, against the fake upstream
# ------------------------------------------------------------------------------------------


def assert_no_key(text: str) -> None:
    assert OPENAI_TEST_KEY not in text, "the upstream API key leaked into a response"


def assert_error_has_no_key(error: openai.APIStatusError) -> None:
    assert_no_key(error.response.text)
    assert_no_key(str(dict(error.response.headers)))


def test_gpt_image_2_sends_one_upstream_request_with_catalog_defaults_and_bearer_key(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    prompt = "a lighthouse in a storm, oil painting"
    raw = client(openai_server.url).images.with_raw_response.generate(model="gpt-image-2", prompt=prompt, n=2)
    assert raw.status_code == 200
    assert_no_key(raw.text)
    assert_no_key(str(dict(raw.headers)))
    response = raw.parse()

    requests = fake_openai.image_requests()
    assert len(requests) == 1, f"expected exactly one upstream call, got {[(r.method, r.path) for r in fake_openai.requests]}"
    upstream = requests[0]
    assert upstream.method == "POST"
    assert upstream.path == "/v1/images/generations"
    assert upstream.headers.get("authorization") == f"Bearer {OPENAI_TEST_KEY}"
    assert upstream.headers.get("content-type", "").startswith("application/json")
    assert upstream.json == {
        "model": "gpt-image-2",
        "prompt": prompt,
        "n": 2,
        "size": "auto",
        "quality": "auto",
        "background": "auto",
        "output_format": "png",
        "moderation": "auto",
    }

    assert response.data is not None and len(response.data) == 2
    assert [decode(image) for image in response.data] == fake_openai.images[:2]
    assert response.usage is not None
    assert response.usage.to_dict() == DEFAULT_USAGE


def test_gpt_image_2_forwards_explicit_params_but_never_response_format(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    response = client(openai_server.url).images.generate(
        model="gpt-image-2",
        prompt="a tram at night",
        size="1536x1024",
        quality="high",
        moderation="low",
        response_format="url",
    )
    body = fake_openai.image_requests()[-1].json
    assert "response_format" not in body
    assert body["size"] == "1536x1024"
    assert body["quality"] == "high"
    assert body["moderation"] == "low"
    assert body["n"] == 1

    # the upstream's b64 image is stored and served by imgproxy itself
    assert response.data is not None and response.data[0].url
    url = response.data[0].url
    assert url.startswith(f"{openai_server.url}/")
    status, headers, image = download(url)
    assert status == 200
    assert headers.get("content-type") == "image/png"
    assert image == fake_openai.images[-1]


def test_gpt_image_2_is_listed_when_an_api_key_is_set(openai_server: Server) -> None:
    sdk = client(openai_server.url)
    raw = sdk.models.with_raw_response.list()
    assert_no_key(raw.text)
    ids = [model["id"] for model in json.loads(raw.text)["data"]]
    assert "gpt-image-2" in ids and "placeholder" in ids
    model = json.loads(sdk.models.with_raw_response.retrieve("gpt-image-2").text)
    assert model["provider"] == "openai"
    assert "1536x1024" in model["allowedParams"]["supported_sizes"]


def test_upstream_429_becomes_rate_limit_error_with_retry_after(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(rate_limited(retry_after=7))
    with pytest.raises(openai.RateLimitError) as caught:
        client(openai_server.url).images.generate(model="gpt-image-2", prompt="a crowd")
    error = caught.value
    assert error.status_code == 429
    retry_after = error.response.headers.get("retry-after")
    assert retry_after is not None, "a 429 must carry Retry-After"
    assert int(retry_after) == 7, f"Retry-After should pass the upstream's 7 seconds through, got {retry_after!r}"
    assert isinstance(error.body, dict) and error.body.get("message")
    assert_error_has_no_key(error)


def test_upstream_500_becomes_502_and_is_never_retried(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.always(server_error())
    with pytest.raises(openai.InternalServerError) as caught:
        client(openai_server.url).images.generate(model="gpt-image-2", prompt="a bridge")
    error = caught.value
    assert error.status_code == 502
    # A 5xx is ambiguous (the upstream may have generated and billed), so it is not retried.
    assert len(fake_openai.image_requests()) == 1
    assert isinstance(error.body, dict) and error.body.get("message")
    assert_error_has_no_key(error)


def test_upstream_moderation_blocked_becomes_bad_request_moderation_blocked(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(moderation_blocked())
    with pytest.raises(openai.BadRequestError) as caught:
        client(openai_server.url).images.generate(model="gpt-image-2", prompt="something not allowed")
    error = caught.value
    assert error.code == "moderation_blocked"
    assert isinstance(error.body, dict) and error.body["code"] == "moderation_blocked"
    assert_error_has_no_key(error)


def test_invalid_gpt_image_2_size_is_rejected_before_any_upstream_call(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(openai_server.url).images.generate(model="gpt-image-2", prompt="p", size="100x100")
    assert caught.value.param == "size"
    assert fake_openai.image_requests() == []


def test_upstream_401_is_the_gateway_s_problem_so_502_without_the_key(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(
        error_reply(401, f"Incorrect API key provided: {OPENAI_TEST_KEY}.", code="invalid_api_key")
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client(openai_server.url).images.generate(model="gpt-image-2", prompt="p")
    assert caught.value.status_code == 502, "the client's own credentials are fine: the upstream's are not"
    assert_error_has_no_key(caught.value)


def test_upstream_400_naming_a_param_is_passed_on_as_400_with_that_param(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(error_reply(400, "Invalid value for quality.", code="invalid_value", param="quality"))
    with pytest.raises(openai.BadRequestError) as caught:
        client(openai_server.url).images.generate(model="gpt-image-2", prompt="p", quality="low")
    assert caught.value.param == "quality"
    assert_error_has_no_key(caught.value)


def test_upstream_answer_without_images_is_502(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.always(Reply(status=200, body={"created": 1, "data": []}))
    with pytest.raises(openai.InternalServerError) as caught:
        client(openai_server.url).images.generate(model="gpt-image-2", prompt="p")
    assert caught.value.status_code == 502


def test_upstream_api_key_is_not_logged(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    sdk = client(openai_server.url)
    sdk.images.generate(model="gpt-image-2", prompt="p")
    fake_openai.always(server_error())
    with pytest.raises(openai.InternalServerError):
        sdk.images.generate(model="gpt-image-2", prompt="another prompt, so not a cache hit")
    assert OPENAI_TEST_KEY not in openai_server.log()
