"""imgproxy's upstream providers end to end: the real binary with each ``<PROVIDER>_BASE_URL``
pointed at a fake built from the documented wire format (tests/e2e/fake_upstreams.py), driven by
the official OpenAI Python SDK.

Each generation test checks both sides: what the fake received (path, auth header with the
configured key, the body fields that matter, the async flow's polls and downloads) and what the
SDK got (the upstream's image, intact). The fakes also validate every request against the wire
format and note violations in ``fake.problems``, which every test asserts empty.

The reference-image guard tests send ``images`` (an imgproxy extension, via ``extra_body``) to
``seedream-4`` and check that forbidden targets are refused with 400 ``param: "image"`` before
any upstream call, and that the forbidden target itself never sees a request.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any, Callable, Iterator

import openai
import pytest
from conftest import ImgproxyFactory, Server
from fake_upstreams import (
    BFL_POLL_PATH,
    FakeBfl,
    FakeFal,
    FakeFiles,
    FakeGemini,
    FakeReplicate,
    FakeServer,
    FakeTogether,
    FakeXai,
    Recorded,
    data_url,
    decode_data_url,
    noise_png,
)
from helpers import client, http
from imaging import PNG_SIGNATURE, jpeg_size, parse_png, parse_webp

GEMINI_KEY = "gm-e2e-key-0123456789"
REPLICATE_TOKEN = "r8_e2e_token_0123456789"
XAI_KEY = "xai-e2e-key-0123456789"
BFL_KEY = "bfl-e2e-key-0123456789"
FAL_KEY = "fal-e2e-key-0123:secret0123456789"
TOGETHER_KEY = "tgp_v1_e2e_key_0123456789"
ALL_KEYS = (GEMINI_KEY, REPLICATE_TOKEN, XAI_KEY, BFL_KEY, FAL_KEY, TOGETHER_KEY)

PROVIDER_MODELS = ["nano-banana-2", "ultra", "seedream-4", "svg", "grok-imagine", "flux-1.1-pro", "z-image", "flux-schnell"]

# A guard refusal happens before any connection: it must not take as long as a fetch timeout.
GUARD_SECONDS = 5.0

# ------------------------------------------------------------------------------------------
# fixtures and helpers
# ------------------------------------------------------------------------------------------


def _fake(make: Callable[[], FakeServer], doc: str | None = None) -> Any:
    """A fixture running the fake that ``make`` builds for the length of one test."""

    def run() -> Iterator[Any]:
        with make() as fake:
            yield fake

    run.__doc__ = doc
    return pytest.fixture(run)


gemini = _fake(lambda: FakeGemini(GEMINI_KEY))
replicate = _fake(lambda: FakeReplicate(REPLICATE_TOKEN))
xai = _fake(lambda: FakeXai(XAI_KEY))
bfl = _fake(lambda: FakeBfl(BFL_KEY))
fal = _fake(lambda: FakeFal(FAL_KEY))
together = _fake(lambda: FakeTogether(TOGETHER_KEY))
refs = _fake(FakeFiles, "The reference-image server the tests allow-list (IMGPROXY_FETCH_ALLOW_HOSTS).")
bait = _fake(FakeFiles, "A live image server on 127.0.0.1 that is NOT allow-listed: it must never be fetched.")
bait6 = _fake(lambda: FakeFiles("::1"), "A live image server on [::1], not allow-listed: it must never be fetched.")


def start(
    imgproxy: ImgproxyFactory,
    *,
    gemini: FakeGemini | None = None,
    gemini_key_var: str = "GEMINI_API_KEY",
    replicate: FakeReplicate | None = None,
    xai: FakeXai | None = None,
    bfl: FakeBfl | None = None,
    fal: FakeFal | None = None,
    together: FakeTogether | None = None,
    refs: FakeFiles | None = None,
    extra: dict[str, str] | None = None,
) -> Server:
    """A server with the given providers enabled by their keys and pointed at the fakes; the
    reference server ``refs`` (if any) is allow-listed by host:port."""
    env: dict[str, str] = {}
    enabled = [
        (gemini, gemini_key_var, GEMINI_KEY, "GEMINI", ""),
        (replicate, "REPLICATE_API_TOKEN", REPLICATE_TOKEN, "REPLICATE", ""),
        (xai, "XAI_API_KEY", XAI_KEY, "XAI", "/v1"),
        (bfl, "BFL_API_KEY", BFL_KEY, "BFL", ""),
        (fal, "FAL_KEY", FAL_KEY, "FAL", ""),
        (together, "TOGETHER_API_KEY", TOGETHER_KEY, "TOGETHER", "/v1"),
    ]
    for fake, key_var, key, name, api_path in enabled:
        if fake:
            env[key_var] = key
            env[f"{name}_BASE_URL"] = f"{fake.url}{api_path}"
    if refs:
        env["IMGPROXY_FETCH_ALLOW_HOSTS"] = f"127.0.0.1:{refs.port}"
    env.update(extra or {})
    return imgproxy.start(env)


def generate(server: Server, **kwargs: Any) -> openai.types.ImagesResponse:
    """images.generate through the SDK; also checks that no upstream key leaks into the
    response or the server's log."""
    raw = client(server.url).images.with_raw_response.generate(**kwargs)
    assert raw.status_code == 200, raw.text[:500]
    for key in ALL_KEYS:
        assert key not in raw.text, "an upstream key leaked into the response"
        assert key not in server.log(), "an upstream key was written to the log"
    return raw.parse()


def assert_no_problems(*fakes: FakeServer) -> None:
    for fake in fakes:
        assert fake.problems == [], (
            f"{type(fake).__name__} saw requests that break the documented wire format: {fake.problems}; "
            f"requests: {fake.summary()}"
        )


def decode(image: openai.types.Image) -> bytes:
    assert image.b64_json, f"image has no b64_json: {image}"
    return base64.b64decode(image.b64_json, validate=True)


def assert_same_image(got: bytes, upstream: bytes) -> None:
    """``got`` is the upstream's PNG passed through unchanged or, if imgproxy converted it to
    another format, a valid image of that format with the same dimensions."""
    expected = parse_png(upstream)
    if got[:8] == PNG_SIGNATURE:
        parse_png(got)
        assert got == upstream, "the PNG the SDK got is not the PNG the upstream sent"
    elif got[:3] == b"\xff\xd8\xff":
        assert jpeg_size(got) == (expected.width, expected.height)
    else:
        webp = parse_webp(got)
        assert (webp.width, webp.height) == (expected.width, expected.height)


def assert_images(response: openai.types.ImagesResponse, upstream: list[bytes]) -> None:
    """The response holds exactly the upstream's images (order-insensitive: n>1 may fan out in
    parallel)."""
    assert response.data is not None, response
    got = [decode(image) for image in response.data]
    assert len(got) == len(upstream), f"expected {len(upstream)} images, got {len(got)}"
    if all(g[:8] == PNG_SIGNATURE for g in got):
        assert sorted(got) == sorted(upstream), "the SDK did not get the upstream's images"
    else:
        for g, u in zip(got, upstream):
            assert_same_image(g, u)


def is_reference(value: Any, url: str, data: bytes) -> bool:
    """A reference passed on to an upstream that takes URLs: the fetched bytes as a data URL,
    or the client's original URL."""
    if value == url:
        return True
    if isinstance(value, str) and value.startswith("data:"):
        mime, decoded = decode_data_url(value)
        return decoded == data and mime == "image/png"
    return False


def no_auth(request: Recorded) -> bool:
    return not any(name in request.headers for name in ("authorization", "x-key", "x-goog-api-key"))


# ------------------------------------------------------------------------------------------
# Gemini: nano-banana-2
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_var", ["GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENERATIVE_AI_API_KEY"])
def test_nano_banana_2_through_gemini_fans_out_n_and_skips_thought_images(
    imgproxy: ImgproxyFactory, gemini: FakeGemini, key_var: str
) -> None:
    server = start(imgproxy, gemini=gemini, gemini_key_var=key_var)
    prompt = "a paper boat on a puddle, macro photo"
    response = generate(server, model="nano-banana-2", prompt=prompt, n=2, extra_body={"aspect_ratio": "16:9"})

    calls = gemini.generate_calls()
    assert len(calls) == 2, f"n=2 must be two generateContent calls (candidateCount ≤ 1): {gemini.summary()}"
    for call in calls:
        assert call.path == "/v1beta/models/gemini-3.1-flash-image:generateContent"
        assert call.headers.get("x-goog-api-key") == GEMINI_KEY
        body = call.json
        texts = [p["text"] for c in body["contents"] for p in c["parts"] if "text" in p]
        assert any(prompt in text for text in texts), f"the prompt is not a text part: {body['contents']}"
        config = body["generationConfig"]
        assert config["responseModalities"] == ["IMAGE"]
        assert config.get("candidateCount", 1) == 1
        image_config = config.get("imageConfig") or config.get("image_config") or {}
        assert image_config.get("aspectRatio", image_config.get("aspect_ratio")) == "16:9", config
    assert_no_problems(gemini)

    assert_images(response, gemini.final_images)
    got = [decode(image) for image in response.data or []]
    assert not set(got) & set(gemini.thought_images), "a thought image (thought: true) was returned as output"


def test_nano_banana_2_reference_images_become_inline_data_parts_in_order(
    imgproxy: ImgproxyFactory, gemini: FakeGemini, refs: FakeFiles
) -> None:
    server = start(imgproxy, gemini=gemini, refs=refs)
    second = refs.bytes_of("/ref-b.png")
    response = generate(
        server,
        model="nano-banana-2",
        prompt="put the hat from the second image on the cat in the first",
        extra_body={"images": [refs.link("/ref-a.png"), data_url(second)]},
    )
    assert "/ref-a.png" in refs.gets(), "the URL reference was not fetched by imgproxy"
    calls = gemini.generate_calls()
    assert len(calls) == 1, gemini.summary()
    parts = [p for c in calls[0].json["contents"] for p in c["parts"]]
    inline = [p.get("inlineData") or p.get("inline_data") for p in parts if "inlineData" in p or "inline_data" in p]
    assert len(inline) == 2, f"expected two inlineData parts: {json.dumps(parts)[:500]}"
    for part, expected in zip(inline, [refs.bytes_of("/ref-a.png"), second]):
        assert part.get("mimeType", part.get("mime_type")) == "image/png"
        assert base64.b64decode(part["data"]) == expected, "inlineData is not the reference image's bytes, in order"
    assert_no_problems(gemini, refs)
    assert_images(response, gemini.final_images)


# ------------------------------------------------------------------------------------------
# Replicate: ultra, seedream-4, svg, flux-1.1-pro routing
# ------------------------------------------------------------------------------------------


def assert_replicate_flow(replicate: FakeReplicate, model_path: str) -> Recorded:
    """One create at ``model_path`` with Bearer and Prefer: wait, polls of urls.get until
    succeeded (one ``processing``, then ``succeeded``: exactly two), the output downloaded
    without credentials. Returns the create request."""
    creates = replicate.create_calls()
    assert len(creates) == 1, f"expected one prediction create: {replicate.summary()}"
    create = creates[0]
    assert create.path == model_path
    assert create.headers.get("authorization") == f"Bearer {REPLICATE_TOKEN}"
    assert create.headers.get("prefer", "").startswith("wait"), create.headers
    prediction_id = next(iter(replicate.predictions))
    polls = replicate.poll_calls()
    assert [p.path for p in polls] == [f"/v1/predictions/{prediction_id}"] * 2, (
        f"expected two polls of urls.get (processing, then succeeded): {replicate.summary()}"
    )
    assert all(p.headers.get("authorization") == f"Bearer {REPLICATE_TOKEN}" for p in polls)
    downloads = replicate.download_calls()
    assert len(downloads) == 1, f"expected the output downloaded once: {replicate.summary()}"
    assert no_auth(downloads[0]), "the Replicate token was sent to the output (delivery) URL"
    assert_no_problems(replicate)
    return create


def test_ultra_with_raw_through_replicate(imgproxy: ImgproxyFactory, replicate: FakeReplicate) -> None:
    server = start(imgproxy, replicate=replicate)
    prompt = "a glacier at sunrise, unprocessed photo"
    response = generate(server, model="ultra", prompt=prompt, extra_body={"raw": True})

    create = assert_replicate_flow(replicate, "/v1/models/black-forest-labs/flux-1.1-pro-ultra/predictions")
    model_input = create.json["input"]
    assert model_input["prompt"] == prompt
    assert model_input.get("raw") is True, f"`raw: true` did not reach the upstream input: {model_input}"
    assert_images(response, replicate.outputs)


def test_seedream_4_with_two_reference_images_through_replicate(
    imgproxy: ImgproxyFactory, replicate: FakeReplicate, refs: FakeFiles
) -> None:
    server = start(imgproxy, replicate=replicate, refs=refs)
    links = [refs.link("/ref-a.png"), refs.link("/ref-b.png")]
    response = generate(
        server,
        model="seedream-4",
        prompt="combine the two products on one marble table",
        extra_body={"images": links},
    )
    assert sorted(refs.gets()) == ["/ref-a.png", "/ref-b.png"], (
        f"imgproxy must fetch both references itself (through its guarded fetcher): {refs.gets()}"
    )
    create = assert_replicate_flow(replicate, "/v1/models/bytedance/seedream-4/predictions")
    image_input = create.json["input"].get("image_input")
    assert isinstance(image_input, list) and len(image_input) == 2, f"input.image_input: {str(image_input)[:300]}"
    for value, link, path in zip(image_input, links, ["/ref-a.png", "/ref-b.png"]):
        assert is_reference(value, link, refs.bytes_of(path)), (
            f"image_input entry is neither the reference's data URL nor its URL, in order: {str(value)[:120]}"
        )
    assert_images(response, replicate.outputs)


def test_svg_through_replicate_returns_the_svg_document(imgproxy: ImgproxyFactory, replicate: FakeReplicate) -> None:
    server = start(imgproxy, replicate=replicate)
    response = generate(server, model="svg", prompt="a flat logo of a fox")

    create = assert_replicate_flow(replicate, "/v1/models/recraft-ai/recraft-v3-svg/predictions")
    assert create.json["input"]["prompt"] == "a flat logo of a fox"
    assert response.data is not None and len(response.data) == 1
    svg = decode(response.data[0])
    assert b"<svg" in svg[:400], f"not an SVG document: {svg[:200]!r}"
    assert svg == replicate.outputs[0], "the SDK did not get the upstream's SVG unchanged"


def test_svg_url_is_served_as_image_svg_xml(imgproxy: ImgproxyFactory, replicate: FakeReplicate) -> None:
    server = start(imgproxy, replicate=replicate)
    response = generate(server, model="svg", prompt="an icon of a key", response_format="url")
    assert response.data is not None and response.data[0].url
    status, headers, body = http("GET", response.data[0].url)
    assert status == 200, body[:300]
    assert headers.get("content-type", "").startswith("image/svg+xml"), headers
    assert body == replicate.outputs[0]
    assert_no_problems(replicate)


def test_svg_with_a_raster_output_format_is_400_output_format_without_an_upstream_call(
    imgproxy: ImgproxyFactory, replicate: FakeReplicate
) -> None:
    server = start(imgproxy, replicate=replicate)
    with pytest.raises(openai.BadRequestError) as caught:
        client(server.url).images.generate(model="svg", prompt="a logo", output_format="png")
    assert caught.value.status_code == 400
    assert caught.value.param == "output_format", caught.value.body
    assert replicate.requests == [], f"no upstream call for an invalid request: {replicate.summary()}"


def test_flux_1_1_pro_prefers_replicate_when_both_replicate_and_bfl_keys_are_set(
    imgproxy: ImgproxyFactory, replicate: FakeReplicate, bfl: FakeBfl
) -> None:
    server = start(imgproxy, replicate=replicate, bfl=bfl)
    response = generate(server, model="flux-1.1-pro", prompt="a red bicycle against a white wall")
    assert_replicate_flow(replicate, "/v1/models/black-forest-labs/flux-1.1-pro/predictions")
    assert bfl.requests == [], f"BFL must not be called when Replicate is configured: {bfl.summary()}"
    assert_images(response, replicate.outputs)


# ------------------------------------------------------------------------------------------
# xAI: grok-imagine
# ------------------------------------------------------------------------------------------


def test_grok_imagine_through_xai(imgproxy: ImgproxyFactory, xai: FakeXai) -> None:
    server = start(imgproxy, xai=xai)
    prompt = "a neon koi fish in a rainy alley"
    response = generate(server, model="grok-imagine", prompt=prompt, n=2)

    calls = xai.calls("POST")
    assert calls and all(c.path == "/v1/images/generations" for c in calls), xai.summary()
    total = 0
    for call in calls:
        assert call.headers.get("authorization") == f"Bearer {XAI_KEY}"
        assert call.headers.get("content-type", "").startswith("application/json")
        body = call.json
        assert body["model"] == "grok-imagine-image"
        assert body["prompt"] == prompt
        assert body.get("response_format") == "b64_json", body
        total += body.get("n", 1)
    assert total == 2, f"the upstream calls asked for {total} images in all, not n=2"
    assert_no_problems(xai)
    assert_images(response, xai.images)


def test_grok_imagine_with_a_reference_image_uses_json_edits(
    imgproxy: ImgproxyFactory, xai: FakeXai, refs: FakeFiles
) -> None:
    server = start(imgproxy, xai=xai, refs=refs)
    link = refs.link("/ref-a.png")
    response = generate(server, model="grok-imagine", prompt="make the square blue", extra_body={"images": [link]})

    calls = xai.calls("POST")
    assert [c.path for c in calls] == ["/v1/images/edits"], f"a reference image means /images/edits: {xai.summary()}"
    body = calls[0].json
    assert calls[0].headers.get("content-type", "").startswith("application/json"), "xAI edits are JSON, not multipart"
    assert body["model"] == "grok-imagine-image"
    image = body.get("image") or (body.get("images") or [None])[0]
    assert isinstance(image, dict) and image.get("type") == "image_url", body
    assert is_reference(image.get("url"), link, refs.bytes_of("/ref-a.png")), str(image)[:200]
    assert_no_problems(xai, refs)
    assert_images(response, xai.images)


# ------------------------------------------------------------------------------------------
# Black Forest Labs: flux-1.1-pro and ultra when only BFL_API_KEY is set
# ------------------------------------------------------------------------------------------


def assert_bfl_flow(bfl: FakeBfl, endpoint: str) -> dict[str, Any]:
    """One submit to ``endpoint`` with x-key, polls of the returned polling_url as it was
    returned, with x-key, until Ready (Pending, then Ready: exactly two), the sample downloaded
    once from the delivery origin without the key. Returns the submitted body."""
    submits = bfl.submit_calls()
    assert [s.path for s in submits] == [endpoint], f"expected one submit to {endpoint}: {bfl.summary()}"
    assert submits[0].headers.get("x-key") == BFL_KEY
    polls = bfl.poll_calls()
    assert [p.path for p in polls] == [BFL_POLL_PATH] * 2, (
        f"expected two polls of the returned polling_url (Pending, then Ready): {bfl.summary()}"
    )
    task_id = next(iter(bfl.tasks))
    assert all(p.query.get("id") == [task_id] and p.headers.get("x-key") == BFL_KEY for p in polls)
    downloads = bfl.download_calls()
    assert len(downloads) == 1, f"expected the sample downloaded once: {bfl.summary()}"
    assert no_auth(downloads[0]), "the BFL key was sent to the delivery URL"
    assert_no_problems(bfl)
    return submits[0].json


def test_flux_1_1_pro_through_bfl_when_only_the_bfl_key_is_set(imgproxy: ImgproxyFactory, bfl: FakeBfl) -> None:
    server = start(imgproxy, bfl=bfl)
    prompt = "a lighthouse keeper's desk, still life"
    response = generate(server, model="flux-1.1-pro", prompt=prompt, size="1024x768")
    body = assert_bfl_flow(bfl, "/v1/flux-pro-1.1")
    assert body["prompt"] == prompt
    assert (body.get("width"), body.get("height")) == (1024, 768), body
    assert_images(response, bfl.samples)


def test_ultra_with_raw_through_bfl_when_only_the_bfl_key_is_set(imgproxy: ImgproxyFactory, bfl: FakeBfl) -> None:
    server = start(imgproxy, bfl=bfl)
    response = generate(server, model="ultra", prompt="a foggy pier", extra_body={"raw": True})
    body = assert_bfl_flow(bfl, "/v1/flux-pro-1.1-ultra")
    assert body["prompt"] == "a foggy pier"
    assert body.get("raw") is True, body
    assert_images(response, bfl.samples)


# ------------------------------------------------------------------------------------------
# fal: z-image
# ------------------------------------------------------------------------------------------


def test_z_image_through_the_fal_queue(imgproxy: ImgproxyFactory, fal: FakeFal) -> None:
    server = start(imgproxy, fal=fal)
    prompt = "a ceramic teapot, studio light"
    response = generate(server, model="z-image", prompt=prompt)

    submits = fal.submit_calls()
    assert [s.path for s in submits] == ["/fal-ai/z-image/turbo"], fal.summary()
    assert submits[0].headers.get("authorization") == f"Key {FAL_KEY}"
    body = submits[0].json
    assert body["prompt"] == prompt and "input" not in body, f"fal takes the input itself as the body: {body}"
    job_id = next(iter(fal.jobs))
    statuses = fal.status_calls()
    assert [s.path for s in statuses] == [f"/fal-ai/z-image/requests/{job_id}/status"] * 3, (
        f"expected status_url polled until COMPLETED (IN_QUEUE, IN_PROGRESS, COMPLETED): {fal.summary()}"
    )
    results = fal.result_calls()
    assert [r.path for r in results] == [f"/fal-ai/z-image/requests/{job_id}"], fal.summary()
    assert all(r.headers.get("authorization") == f"Key {FAL_KEY}" for r in statuses + results)
    downloads = fal.download_calls()
    assert len(downloads) == 1 and no_auth(downloads[0]), f"one download, without the key: {fal.summary()}"
    assert_no_problems(fal)
    assert_images(response, fal.images)


# ------------------------------------------------------------------------------------------
# Together: flux-schnell
# ------------------------------------------------------------------------------------------


def test_flux_schnell_through_together(imgproxy: ImgproxyFactory, together: FakeTogether) -> None:
    server = start(imgproxy, together=together)
    prompt = "a snail on a strawberry"
    response = generate(server, model="flux-schnell", prompt=prompt)

    calls = together.calls("POST")
    assert [c.path for c in calls] == ["/v1/images/generations"], together.summary()
    assert calls[0].headers.get("authorization") == f"Bearer {TOGETHER_KEY}"
    body = calls[0].json
    assert body["model"] == "black-forest-labs/FLUX.1-schnell"
    assert body["prompt"] == prompt
    assert body.get("response_format") == "base64", f"Together takes `base64`, not `b64_json`: {body}"
    assert_no_problems(together)
    assert_images(response, together.images)


# ------------------------------------------------------------------------------------------
# /v1/models
# ------------------------------------------------------------------------------------------


def model_ids(server: Server) -> set[str]:
    return {model.id for model in client(server.url).models.list()}


def test_provider_models_are_listed_when_their_keys_are_set(
    imgproxy: ImgproxyFactory,
    gemini: FakeGemini,
    replicate: FakeReplicate,
    xai: FakeXai,
    fal: FakeFal,
    together: FakeTogether,
) -> None:
    server = start(imgproxy, gemini=gemini, replicate=replicate, xai=xai, fal=fal, together=together)
    ids = model_ids(server)
    missing = [model for model in PROVIDER_MODELS if model not in ids]
    assert not missing, f"models missing from /v1/models with every key set: {missing}"
    for fake in (gemini, replicate, xai, fal, together):
        assert fake.requests == [], f"listing models must not call upstreams: {fake.summary()}"


def test_provider_models_are_not_listed_without_keys_and_bfl_alone_serves_the_flux_models(
    imgproxy: ImgproxyFactory, bfl: FakeBfl
) -> None:
    bare = imgproxy.start()
    listed = [model for model in PROVIDER_MODELS if model in model_ids(bare)]
    assert not listed, f"models listed without any provider key: {listed}"

    only_bfl = model_ids(start(imgproxy, bfl=bfl))
    assert {"flux-1.1-pro", "ultra"} <= only_bfl, f"BFL_API_KEY alone must serve flux-1.1-pro and ultra: {sorted(only_bfl)}"
    assert not {"seedream-4", "svg", "nano-banana-2", "z-image"} & only_bfl, sorted(only_bfl)


# ------------------------------------------------------------------------------------------
# Reference-image guard
# ------------------------------------------------------------------------------------------


def refuse(server: Server, images: list[str]) -> openai.BadRequestError:
    """Sends ``images`` to seedream-4 and expects 400 with param ``image``, quickly."""
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as caught:
        client(server.url).images.generate(model="seedream-4", prompt="combine these", extra_body={"images": images})
    elapsed = time.monotonic() - started
    error = caught.value
    assert error.status_code == 400
    assert isinstance(error.body, dict) and error.body.get("param") == "image", f"expected param `image`: {error.body}"
    assert error.param == "image"
    assert elapsed < GUARD_SECONDS, f"the refusal took {elapsed:.1f}s: the guard must refuse before connecting"
    return error


def guard_target(case: str, refs: FakeFiles, bait: FakeFiles, bait6: FakeFiles) -> str:
    return {
        "loopback-not-allow-listed": f"http://127.0.0.1:{bait.port}/x.png",
        "private-10.0.0.1": "http://10.0.0.1/x.png",
        "metadata-169.254.169.254": "http://169.254.169.254/latest/meta-data/",
        "ipv6-loopback": f"http://[::1]:{bait6.port}/x.png",
        "localhost-name": f"http://localhost:{bait.port}/x.png",
        "redirect-to-loopback": f"{refs.url}/redirect?to=http://127.0.0.1:{bait.port}/x.png",
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "loopback-not-allow-listed",
        "private-10.0.0.1",
        "metadata-169.254.169.254",
        "ipv6-loopback",
        "localhost-name",
        "redirect-to-loopback",
    ],
)
def test_reference_url_to_a_forbidden_target_is_400_image_without_any_upstream_call(
    imgproxy: ImgproxyFactory,
    replicate: FakeReplicate,
    refs: FakeFiles,
    bait: FakeFiles,
    bait6: FakeFiles,
    case: str,
) -> None:
    server = start(imgproxy, replicate=replicate, refs=refs)
    error = refuse(server, [guard_target(case, refs, bait, bait6)])
    assert replicate.requests == [], f"a refused reference must not reach the upstream: {replicate.summary()}"
    assert bait.requests == [] and bait6.requests == [], (
        f"the forbidden server was contacted: {bait.summary() + bait6.summary()}"
    )
    if case == "redirect-to-loopback":
        assert refs.gets() == ["/redirect"], refs.summary()
    if case.startswith(("private", "metadata")):
        # Nothing listens there: a refusal that talks of connecting or timing out means the
        # guard let the fetch go ahead.
        assert not re.search(r"connect|timed? ?out", error.message, re.I), (
            f"the message suggests a fetch was attempted rather than refused: {error.message!r}"
        )


def test_one_forbidden_reference_among_allowed_ones_refuses_the_request(
    imgproxy: ImgproxyFactory, replicate: FakeReplicate, refs: FakeFiles, bait: FakeFiles
) -> None:
    server = start(imgproxy, replicate=replicate, refs=refs)
    refuse(server, [refs.link("/ref-a.png"), f"http://127.0.0.1:{bait.port}/x.png"])
    assert replicate.requests == [], replicate.summary()
    assert bait.requests == [], bait.summary()


def test_oversized_reference_is_400_image_and_a_small_one_still_works(
    imgproxy: ImgproxyFactory, replicate: FakeReplicate, refs: FakeFiles
) -> None:
    limit = 8192
    assert len(refs.bytes_of("/big.png")) > 3 * limit and len(refs.bytes_of("/ref-a.png")) < limit
    server = start(imgproxy, replicate=replicate, refs=refs, extra={"IMGPROXY_FETCH_MAX_BYTES": str(limit)})

    for images in (
        [refs.link("/big.png")],  # with Content-Length
        [refs.link("/big-chunked.png")],  # chunked, no Content-Length: counted as it streams
        [data_url(noise_png(100, seed=9))],  # a data URL over the limit
    ):
        refuse(server, images)
    assert replicate.requests == [], f"an oversized reference must not reach the upstream: {replicate.summary()}"

    # The limit is what refused them: a small reference passes on the same server.
    response = generate(server, model="seedream-4", prompt="p", extra_body={"images": [refs.link("/ref-a.png")]})
    assert_images(response, replicate.outputs)
    assert_no_problems(replicate)


def test_non_image_reference_is_400_image(imgproxy: ImgproxyFactory, replicate: FakeReplicate, refs: FakeFiles) -> None:
    server = start(imgproxy, replicate=replicate, refs=refs)
    refuse(server, [refs.link("/page.html")])
    refuse(server, [data_url(refs.bytes_of("/page.html"), "text/html")])
    assert "/page.html" in refs.gets()
    assert replicate.requests == [], f"a non-image reference must not reach the upstream: {replicate.summary()}"
