"""Catalog truth (issue 10): the catalog against upstreams that behave as they do in December
2026, end to end with the real binary.

The fakes (tests/e2e/fake_upstreams.py, tests/e2e/fake_openai.py) answer like the real APIs
now: 404 for shut-down model ids (Gemini's preview and 2.5 image models, Replicate's
``google/imagen-4`` and ``google/nano-banana``, xAI's ``grok-imagine-image-quality``, OpenAI's
``gpt-image-1`` / ``dall-e-*``), 400 for fields a model does not take (Gemini's
``personGeneration``, GPT Image 2.6's fields on 2.5, BFL's ``safety_tolerance`` > 2 with input
images), and note every such request in ``fake.problems``. A test that reaches a fake asserts
that list empty: the gateway sent nothing the real upstream would refuse. A test of a refusal
asserts the 400/404 names the parameter (or the replacement) and that no upstream saw a request.

Billing: a metered key is charged for the images that came back, not the ``n`` asked
(seedream's ``max_images`` is a cap; xAI and OpenAI may return fewer too).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import openai
import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server
from fake_openai import FakeOpenAI, Reply, solid_png
from fake_upstreams import FakeBfl, FakeFiles, FakeGemini, FakeReplicate, FakeXai, data_url
from helpers import assert_error_envelope, client, http
from test_credits import MASTER_KEY, Backend, LedgerRow, assert_ledger_adds_up, balance, bearer, create_key
from test_providers import (  # noqa: F401 - the fakes' fixtures are shared, not copied
    BFL_KEY,
    GEMINI_KEY,
    REPLICATE_TOKEN,
    XAI_KEY,
    assert_bfl_flow,
    bfl,
    gemini,
    refs,
    replicate,
    xai,
    assert_images,
    assert_no_problems,
    assert_replicate_flow,
    decode,
    generate,
    is_reference,
    start,
)

# Prices from the catalog (imgproxy-core/catalog/*.toml), in credits per image.
SEEDREAM_4 = 30
GROK_IMAGINE = 20
GPT_IMAGE_2_LOW = 6


# ------------------------------------------------------------------------------------------
# fixtures and helpers
# ------------------------------------------------------------------------------------------


def post(server: Server, body: dict[str, Any], key: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """POST /v1/images/generations with a raw JSON body."""
    return http(
        "POST",
        f"{server.url}/v1/images/generations",
        json_body=body,
        headers=bearer(key) if key else {},
        timeout=60,
    )


def refused(server: Server, body: dict[str, Any], status: int, param: str | None) -> dict[str, Any]:
    """Sends ``body`` and checks the OpenAI error envelope with ``status`` and ``param``."""
    got, headers, raw = post(server, body)
    return assert_error_envelope(got, headers, raw, expected_status=status, param=param)


def image_config(call: Any) -> dict[str, Any]:
    config = call.json["generationConfig"]
    return config.get("imageConfig") or config.get("image_config") or {}


def assert_no_person_generation(gemini: FakeGemini) -> None:
    for call in gemini.generate_calls():
        text = json.dumps(call.json)
        assert "personGeneration" not in text and "person_generation" not in text, f"personGeneration was sent: {text[:400]}"


# ------------------------------------------------------------------------------------------
# Gemini: GA ids, no personGeneration, the retired nano-banana served by nano-banana-2
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "upstream", "aspect_ratio", "image_size"),
    [
        ("nano-banana-pro", "gemini-3-pro-image", "21:9", "4K"),
        ("nano-banana-2", "gemini-3.1-flash-image", "4:1", "512"),
    ],
)
def test_nano_banana_pro_and_2_generate_through_the_ga_gemini_ids_with_aspect_ratio_and_image_size(
    imgproxy: ImgproxyFactory, gemini: FakeGemini, model: str, upstream: str, aspect_ratio: str, image_size: str
) -> None:
    server = start(imgproxy, gemini=gemini)
    response = generate(
        server, model=model, prompt="a lantern in the fog", extra_body={"aspect_ratio": aspect_ratio, "image_size": image_size}
    )
    calls = gemini.generate_calls()
    assert [c.path for c in calls] == [f"/v1beta/models/{upstream}:generateContent"], gemini.summary()
    config = image_config(calls[0])
    assert config.get("aspectRatio", config.get("aspect_ratio")) == aspect_ratio, config
    assert config.get("imageSize", config.get("image_size")) == image_size, config
    assert_no_person_generation(gemini)
    assert_no_problems(gemini)
    assert_images(response, gemini.final_images)


@pytest.mark.parametrize("name", ["nano-banana", "nanobanana"])
def test_the_retired_nano_banana_is_served_by_nano_banana_2_on_gemini_3_1_flash_image(
    imgproxy: ImgproxyFactory, gemini: FakeGemini, name: str
) -> None:
    server = start(imgproxy, gemini=gemini)
    response = generate(server, model=name, prompt="a banana boat", n=2, extra_body={"aspect_ratio": "3:2"})
    calls = gemini.generate_calls()
    assert [c.path for c in calls] == ["/v1beta/models/gemini-3.1-flash-image:generateContent"] * 2, (
        f"`{name}` must go to Gemini 3.1 Flash Image, never the shut-down gemini-2.5-flash-image: {gemini.summary()}"
    )
    for call in calls:
        assert image_config(call).get("aspectRatio") == "3:2", call.json
    assert_no_person_generation(gemini)
    assert_no_problems(gemini)
    assert_images(response, gemini.final_images)


@pytest.mark.parametrize("model", ["nano-banana-pro", "nano-banana-2", "nano-banana"])
def test_person_generation_is_400_naming_it_without_an_upstream_call(
    imgproxy: ImgproxyFactory, gemini: FakeGemini, model: str
) -> None:
    server = start(imgproxy, gemini=gemini)
    error = refused(server, {"model": model, "prompt": "a crowd", "person_generation": "allow_adult"}, 400, "person_generation")
    assert "person_generation" in error["message"], error
    assert gemini.requests == [], f"a refused request must not reach Gemini: {gemini.summary()}"


# ------------------------------------------------------------------------------------------
# OpenAI: GPT Image 2.5 vs 2.6, GIF/SVG rules, dated aliases, retired ids
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("complexity", "high"),
        ("frame_count", 4),
        ("frame_duration_ms", 100),
        ("svg", {"model": "gpt-5.6-terra"}),
        ("output_format", "gif"),
        ("output_format", "svg"),
    ],
)
@pytest.mark.parametrize("model", ["gpt-image-2.5-flare", "gpt-image-2.5-sunburst-2026-09-08"])
def test_gpt_image_2_5_refuses_what_arrived_with_2_6_without_an_upstream_call(
    openai_server: Server, fake_openai: FakeOpenAI, model: str, field: str, value: Any
) -> None:
    error = refused(openai_server, {"model": model, "prompt": "a comet", field: value}, 400, field)
    assert field in error["message"], error
    assert fake_openai.requests == [], f"a refused request must not reach OpenAI: {[r.path for r in fake_openai.requests]}"


def test_gpt_image_2_5_flare_with_complexity_through_the_sdk_is_400_complexity(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(openai_server.url).images.generate(model="gpt-image-2.5-flare", prompt="a comet", extra_body={"complexity": "low"})
    assert caught.value.status_code == 400
    assert caught.value.param == "complexity", caught.value.body
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({}, "svg"),  # no svg object at all
        ({"svg": {"reasoning": {"effort": "low"}}}, "svg"),  # an svg object without svg.model
        ({"svg": {"model": "gpt-5.6-terra"}, "n": 2}, "n"),
        ({"svg": {"model": "gpt-5.6-terra"}, "stream": True}, "stream"),
        ({"svg": {"model": "gpt-5.6-terra"}, "stream": True, "partial_images": 1}, "stream"),
    ],
    ids=["no-svg", "no-svg-model", "n-2", "stream", "stream-partials"],
)
def test_gpt_image_2_6_flare_svg_rules_are_400s_naming_the_field_without_an_upstream_call(
    openai_server: Server, fake_openai: FakeOpenAI, fields: dict[str, Any], param: str
) -> None:
    body = {"model": "gpt-image-2.6-flare", "prompt": "a fox logo", "output_format": "svg", **fields}
    refused(openai_server, body, 400, param)
    assert fake_openai.requests == [], f"a refused request must not reach OpenAI: {[r.path for r in fake_openai.requests]}"


def test_gpt_image_2_6_flare_svg_with_svg_model_goes_through(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    svg = {"model": "gpt-5.6-terra", "reasoning": {"effort": "low"}}
    status, _, raw = post(
        openai_server, {"model": "gpt-image-2.6-flare", "prompt": "a fox logo", "output_format": "svg", "svg": svg}
    )
    assert status == 200, raw[:500]
    (upstream,) = fake_openai.image_requests()
    body = upstream.json
    assert body["model"] == "gpt-image-2.6-flare"
    assert body["output_format"] == "svg" and body["svg"] == svg, body
    assert body["n"] == 1 and "stream" not in body, body
    assert fake_openai.problems == [], fake_openai.problems
    data = json.loads(raw)["data"]
    assert [base64.b64decode(item["b64_json"]) for item in data] == fake_openai.images, "the SVG did not come back as sent"
    assert b"<svg" in fake_openai.images[0]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stream": True}, "stream"),
        ({"stream": True, "partial_images": 2}, "stream"),
        ({"output_compression": 50}, "output_compression"),
        ({"frame_duration_ms": 10}, "frame_duration_ms"),
        ({"frame_duration_ms": 655351}, "frame_duration_ms"),
    ],
    ids=["stream", "stream-partials", "output-compression", "frame-duration-10", "frame-duration-655351"],
)
def test_gpt_image_2_6_flare_gif_rules_are_400s_naming_the_field_without_an_upstream_call(
    openai_server: Server, fake_openai: FakeOpenAI, fields: dict[str, Any], param: str
) -> None:
    body = {"model": "gpt-image-2.6-flare", "prompt": "a spinning coin", "output_format": "gif", "frame_count": 4, **fields}
    refused(openai_server, body, 400, param)
    assert fake_openai.requests == [], f"a refused request must not reach OpenAI: {[r.path for r in fake_openai.requests]}"


def test_gpt_image_2_6_flare_gif_with_frames_goes_through(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    body = {"model": "gpt-image-2.6-flare", "prompt": "a coin", "output_format": "gif", "frame_count": 4, "frame_duration_ms": 655350}
    status, _, raw = post(openai_server, body)
    assert status == 200, raw[:500]
    (upstream,) = fake_openai.image_requests()
    body = upstream.json
    assert (body["output_format"], body["frame_count"], body["frame_duration_ms"]) == ("gif", 4, 655350), body
    assert fake_openai.problems == [], fake_openai.problems
    (item,) = json.loads(raw)["data"]
    assert base64.b64decode(item["b64_json"])[:6] == b"GIF89a", "the GIF did not come back as sent"


@pytest.mark.parametrize(
    ("alias", "upstream"),
    [
        ("gpt-image-2.5-flare-2026-09-08", "gpt-image-2.5-flare"),
        ("gpt-image-2.5-sunburst-2026-09-08", "gpt-image-2.5-sunburst"),
    ],
)
def test_a_dated_snapshot_alias_goes_upstream_as_its_model(
    openai_server: Server, fake_openai: FakeOpenAI, alias: str, upstream: str
) -> None:
    response = client(openai_server.url).images.generate(model=alias, prompt="a tide clock", quality="max")
    (request,) = fake_openai.image_requests()
    assert request.json["model"] == upstream, request.json
    assert request.json["quality"] == "max", request.json
    assert fake_openai.problems == [], fake_openai.problems
    assert [decode(image) for image in response.data or []] == fake_openai.images


@pytest.mark.parametrize(
    ("model", "replacement", "shutdown"),
    [
        ("dall-e-3", "gpt-image-2", "2026-05-12"),
        ("dall-e-2", "gpt-image-2", "2026-05-12"),
        ("gpt-image-1", "gpt-image-2.5-sunburst", "2026-10-23"),
    ],
)
def test_a_retired_openai_id_is_404_naming_its_replacement_without_an_upstream_call(
    openai_server: Server, fake_openai: FakeOpenAI, model: str, replacement: str, shutdown: str
) -> None:
    error = refused(openai_server, {"model": model, "prompt": "a lighthouse"}, 404, "model")
    assert error["code"] == "model_not_found", error
    assert f"`{replacement}`" in error["message"] and shutdown in error["message"], error
    with pytest.raises(openai.NotFoundError) as caught:
        client(openai_server.url).images.generate(model=model, prompt="a lighthouse")
    assert replacement in caught.value.message
    assert fake_openai.requests == [], f"a retired id must not reach OpenAI: {[r.path for r in fake_openai.requests]}"


# ------------------------------------------------------------------------------------------
# Replicate: imagen4 / gemini served by google/nano-banana-2; nano-banana-pro's inputs
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["imagen4", "gemini"])
def test_imagen4_and_gemini_with_only_replicate_go_to_google_nano_banana_2(
    imgproxy: ImgproxyFactory, replicate: FakeReplicate, name: str
) -> None:
    server = start(imgproxy, replicate=replicate)
    response = generate(server, model=name, prompt="a koi pond", extra_body={"aspect_ratio": "16:9", "image_size": "2K"})
    create = assert_replicate_flow(replicate, "/v1/models/google/nano-banana-2/predictions")
    model_input = create.json["input"]
    assert model_input["prompt"] == "a koi pond"
    assert model_input.get("aspect_ratio") == "16:9" and model_input.get("resolution") == "2K", model_input
    paths = [r.path for r in replicate.requests]
    assert not any("imagen-4" in p or p.startswith("/v1/models/google/nano-banana/") for p in paths), paths
    assert_images(response, replicate.outputs)


def test_imagen4_is_refused_a_parameter_only_imagen_took(imgproxy: ImgproxyFactory, replicate: FakeReplicate) -> None:
    server = start(imgproxy, replicate=replicate)
    refused(server, {"model": "imagen4", "prompt": "p", "safety_filter_level": "block_only_high"}, 400, "safety_filter_level")
    assert replicate.requests == [], replicate.summary()


def test_nano_banana_pro_on_replicate_sends_image_input_resolution_and_jpg(
    imgproxy: ImgproxyFactory, replicate: FakeReplicate, refs: FakeFiles
) -> None:
    server = start(imgproxy, replicate=replicate, refs=refs)
    link = refs.link("/ref-a.png")
    response = generate(
        server,
        model="nano-banana-pro",
        prompt="the same vase, in bronze",
        output_format="jpeg",
        extra_body={"images": [link], "image_size": "4K", "aspect_ratio": "4:5"},
    )
    create = assert_replicate_flow(replicate, "/v1/models/google/nano-banana-pro/predictions")
    model_input = create.json["input"]
    sent = (model_input.get("resolution"), model_input.get("aspect_ratio"), model_input.get("output_format"))
    assert sent == ("4K", "4:5", "jpg"), model_input
    image_input = model_input.get("image_input")
    assert isinstance(image_input, list) and len(image_input) == 1, model_input
    assert is_reference(image_input[0], link, refs.bytes_of("/ref-a.png")), str(image_input[0])[:120]
    assert response.data is not None and len(response.data) == 1


# ------------------------------------------------------------------------------------------
# xAI: grok-imagine-pro served by grok-imagine-image-2.0
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("quality", "sent"), [(None, "auto"), ("medium", "medium"), ("low", "low")])
@pytest.mark.parametrize("name", ["grok-imagine-pro", "grok-imagine-image-quality", "grok-imagine-2"])
def test_grok_imagine_pro_is_served_by_grok_imagine_image_2_0_with_quality(
    imgproxy: ImgproxyFactory, xai: FakeXai, name: str, quality: str | None, sent: str
) -> None:
    server = start(imgproxy, xai=xai)
    extra: dict[str, Any] = {"aspect_ratio": "21:9"}
    if quality:
        extra["quality"] = quality
    response = generate(server, model=name, prompt="a neon heron", extra_body=extra)
    calls = xai.calls("POST")
    assert [c.path for c in calls] == ["/v1/images/generations"], xai.summary()
    body = calls[0].json
    assert body["model"] == "grok-imagine-image-2.0", body
    assert body.get("quality") == sent, body
    assert body.get("aspect_ratio") == "21:9", body
    assert_no_problems(xai)
    assert_images(response, xai.images)


def test_grok_imagine_image_2_0_takes_five_reference_images_and_5_2(imgproxy: ImgproxyFactory, xai: FakeXai) -> None:
    server = start(imgproxy, xai=xai)
    pngs = [solid_png(500 + i) for i in range(5)]
    extra = {"images": [data_url(p) for p in pngs], "aspect_ratio": "5:2"}
    response = generate(server, model="grok-imagine-image-2.0", prompt="a collage", extra_body=extra)
    (call,) = xai.calls("POST")
    assert call.path == "/v1/images/edits", xai.summary()
    images = call.json.get("images") or [call.json.get("image")]
    assert len(images) == 5, call.json
    assert call.json.get("aspect_ratio") == "5:2", call.json
    assert_no_problems(xai)
    assert_images(response, xai.images)
    # grok-imagine keeps its own limit of 3.
    refused(server, {"model": "grok-imagine", "prompt": "p", "images": [data_url(p) for p in pngs[:4]]}, 400, "image")
    assert len(xai.calls("POST")) == 1


# ------------------------------------------------------------------------------------------
# Black Forest Labs: FLUX.2, safety_tolerance with input images, a failed task's error
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["flux-2-pro", "flux-2-max", "flux-2-flex", "flux-2-klein-4b", "flux-2-klein-9b"])
def test_flux_2_through_bfl_with_width_and_height(imgproxy: ImgproxyFactory, bfl: FakeBfl, model: str) -> None:
    server = start(imgproxy, bfl=bfl)
    response = generate(server, model=model, prompt="a brass compass on a map", size="1024x768")
    body = assert_bfl_flow(bfl, f"/v1/{model}")
    assert body["prompt"] == "a brass compass on a map"
    assert (body.get("width"), body.get("height")) == (1024, 768), body
    assert body.get("safety_tolerance") == 2 and body.get("output_format") == "jpeg", f"FLUX.2's defaults: {body}"
    assert response.data is not None and len(response.data) == 1


def test_flux_2_pro_with_reference_images_sends_input_image_fields_in_order(
    imgproxy: ImgproxyFactory, bfl: FakeBfl
) -> None:
    server = start(imgproxy, bfl=bfl)
    pngs = [solid_png(700), solid_png(701)]
    extra = {"images": [data_url(p) for p in pngs], "safety_tolerance": 2}
    generate(server, model="flux-2-pro", prompt="the two mugs side by side", extra_body=extra)
    body = assert_bfl_flow(bfl, "/v1/flux-2-pro")
    assert base64.b64decode(body["input_image"]) == pngs[0], "input_image is not the first reference, bare base64"
    assert base64.b64decode(body["input_image_2"]) == pngs[1], "input_image_2 is not the second reference"
    assert body.get("safety_tolerance") == 2, body


@pytest.mark.parametrize("model", ["flux-2-pro", "flux-2-klein-4b", "flux-kontext-pro", "flux-pro-1.1"])
def test_safety_tolerance_above_2_with_a_reference_image_is_400_without_an_upstream_call(
    imgproxy: ImgproxyFactory, bfl: FakeBfl, model: str
) -> None:
    server = start(imgproxy, bfl=bfl)
    body = {"model": model, "prompt": "p", "images": [data_url(solid_png(9))], "safety_tolerance": 3}
    error = refused(server, body, 400, "safety_tolerance")
    assert "2" in error["message"], error
    assert bfl.requests == [], f"a refused request must not reach BFL: {bfl.summary()}"
    # Without a reference image the same tolerance is fine.
    generate(server, model=model, prompt="p", extra_body={"safety_tolerance": 3})
    (submit,) = bfl.submit_calls()
    assert submit.json.get("safety_tolerance") == 3
    assert_no_problems(bfl)


def test_a_failed_bfl_task_shows_its_error_text(imgproxy: ImgproxyFactory) -> None:
    reason = "Task failed: GPU worker ran out of memory (code 7731)"
    with FakeBfl(BFL_KEY, task_error=reason) as bfl:
        server = start(imgproxy, bfl=bfl)
        status, headers, raw = post(server, {"model": "flux-2-pro", "prompt": "a doomed lighthouse"})
        error = assert_error_envelope(status, headers, raw, expected_status=502, code="upstream_error")
        assert "GPU worker ran out of memory (code 7731)" in error["message"], error
        assert len(bfl.submit_calls()) == 1 and bfl.poll_calls(), bfl.summary()
        assert bfl.download_calls() == [], "a failed task has nothing to download"


# ------------------------------------------------------------------------------------------
# Billing follows what came back
# ------------------------------------------------------------------------------------------


def charged_for_two_of_four(server: Server, body: dict[str, Any], *, initial: int, price: int) -> None:
    """Sends ``body`` (asking for 4 images, of which the upstream returns 2) with a new key of
    ``initial`` credits and checks: 2 images, ``credits_used`` == 2 * ``price``, the balance (API,
    header, stored) down by as much, and a ledger whose reserve (4 * ``price``) and settle rows
    add up to it."""
    key, secret = create_key(server, credits=initial)
    reserved, charged, returned = 4 * price, 2 * price, 2
    status, headers, raw = post(server, body, secret)
    assert status == 200, raw[:500]
    answer = json.loads(raw)
    assert len(answer["data"]) == returned, f"expected {returned} images: {len(answer['data'])}"
    assert answer.get("credits_used") == charged, f"credits_used {answer.get('credits_used')!r}, expected {charged}"
    assert headers.get("x-credits-remaining") == str(initial - charged), headers.get("x-credits-remaining")
    assert balance(server, secret) == initial - charged
    backend = Backend("sqlite")
    assert backend.stored_balance(server, key["id"]) == initial - charged
    rows: list[LedgerRow] = backend.ledger(server, key["id"])
    assert_ledger_adds_up(rows, initial - charged)
    reserves = [row for row in rows if row.kind == "reserve"]
    settles = [row for row in rows if row.kind == "settle"]
    assert [row.amount for row in reserves] == [-reserved], rows
    assert [row.amount for row in settles] == [reserved - charged], f"the settle must give back the undelivered images: {rows}"
    assert settles[0].request_id == reserves[0].request_id, rows


def test_a_metered_seedream_4_request_for_4_that_gets_2_back_is_charged_for_2(imgproxy: ImgproxyFactory) -> None:
    with FakeReplicate(REPLICATE_TOKEN, images_cap=2) as replicate:
        server = start(imgproxy, replicate=replicate, extra={"IMGPROXY_MASTER_KEY": MASTER_KEY})
        body = {"model": "seedream-4", "prompt": "four postcards of Lisbon", "n": 4}
        charged_for_two_of_four(server, body, initial=1000, price=SEEDREAM_4)
        (create,) = replicate.create_calls()
        model_input = create.json["input"]
        assert model_input.get("max_images") == 4 and model_input.get("sequential_image_generation") == "auto", model_input
        assert len(replicate.download_calls()) == 2, replicate.summary()
        assert_no_problems(replicate)


def test_a_metered_grok_imagine_request_for_4_that_gets_2_back_is_charged_for_2(imgproxy: ImgproxyFactory) -> None:
    with FakeXai(XAI_KEY, images_cap=2) as xai:
        server = start(imgproxy, xai=xai, extra={"IMGPROXY_MASTER_KEY": MASTER_KEY})
        body = {"model": "grok-imagine", "prompt": "four neon koi", "n": 4}
        charged_for_two_of_four(server, body, initial=500, price=GROK_IMAGINE)
        (call,) = xai.calls("POST")
        assert call.json.get("n") == 4, call.json
        assert_no_problems(xai)


def test_a_metered_gpt_image_2_request_for_4_that_gets_2_back_is_charged_for_2(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI
) -> None:
    server = imgproxy.start(
        {"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": f"{fake_openai.url}/v1", "IMGPROXY_MASTER_KEY": MASTER_KEY}
    )
    two = [solid_png(900), solid_png(901)]
    fake_openai.then(
        Reply(200, {"created": 1, "data": [{"b64_json": base64.b64encode(p).decode()} for p in two], "output_format": "png"})
    )
    body = {"model": "gpt-image-2", "prompt": "four ledgers", "n": 4, "quality": "low"}
    charged_for_two_of_four(server, body, initial=100, price=GPT_IMAGE_2_LOW)
    (request,) = fake_openai.image_requests()
    assert request.json["n"] == 4, request.json


# ------------------------------------------------------------------------------------------
# /v1/models shows retirements
# ------------------------------------------------------------------------------------------


def model_object(server: Server, name: str) -> dict[str, Any]:
    status, _, raw = http("GET", f"{server.url}/v1/models/{name}")
    assert status == 200, f"GET /v1/models/{name} -> {status}: {raw[:300]!r}"
    return json.loads(raw)


@pytest.mark.parametrize("name", ["nano-banana", "nanobanana"])
def test_get_model_nano_banana_shows_the_retirement_and_the_redirect(
    imgproxy: ImgproxyFactory, gemini: FakeGemini, name: str
) -> None:
    server = start(imgproxy, gemini=gemini)
    model = model_object(server, name)
    assert model["id"] == "nano-banana", model
    assert model.get("shutdown_date") == "2026-10-02", model
    assert model.get("replacement") == "nano-banana-2", model
    assert model.get("redirected_to_replacement") is True, model
    listed = {m["id"]: m for m in json.loads(http("GET", f"{server.url}/v1/models")[2])["data"]}
    assert listed["nano-banana"].get("shutdown_date") == "2026-10-02", listed["nano-banana"]
    assert "shutdown_date" not in listed["nano-banana-2"], listed["nano-banana-2"]
    assert gemini.requests == []


@pytest.mark.parametrize(
    ("name", "replacement"),
    [("imagen-4.0-generate-001", "nano-banana-2"), ("imagen-4-fast", "nano-banana-2"), ("imagen-4-ultra", "nano-banana-pro")],
)
def test_imagen_on_the_gemini_api_is_retired_and_names_its_replacement(
    imgproxy: ImgproxyFactory, gemini: FakeGemini, name: str, replacement: str
) -> None:
    server = start(imgproxy, gemini=gemini)
    error = refused(server, {"model": name, "prompt": "a robot with a red skateboard"}, 404, "model")
    assert "retired upstream on 2026-06-24" in error["message"] and f"`{replacement}`" in error["message"], error
    model = model_object(server, name)
    assert (model.get("shutdown_date"), model.get("replacement"), model.get("redirected_to_replacement")) == (
        "2026-06-24", replacement, False
    ), model
    assert gemini.requests == []


def test_get_model_shows_other_retirements(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, xai: FakeXai, replicate: FakeReplicate
) -> None:
    openai_env = {"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": f"{fake_openai.url}/v1"}
    server = start(imgproxy, xai=xai, replicate=replicate, extra=openai_env)
    expected = {
        "dall-e-3": ("2026-05-12", "gpt-image-2", False),
        "gpt-image-1": ("2026-10-23", "gpt-image-2.5-sunburst", False),
        "grok-imagine-pro": ("2026-11-02", "grok-imagine-image-2.0", True),
        "imagen4": ("2026-08-17", "nano-banana-2", True),
        "gemini": ("2026-10-02", "nano-banana-2", True),
    }
    for name, (date, replacement, redirected) in expected.items():
        model = model_object(server, name)
        got = (model.get("shutdown_date"), model.get("replacement"), model.get("redirected_to_replacement"))
        assert got == (date, replacement, redirected), f"{name}: {model}"
    live = model_object(server, "grok-imagine-image-2.0")
    assert "shutdown_date" not in live and "grok-imagine-2" in live["aliases"], live
    assert fake_openai.requests == [] and xai.requests == [] and replicate.requests == []
