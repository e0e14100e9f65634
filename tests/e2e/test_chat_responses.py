"""Images through the two other front doors, end to end: ``POST /v1/chat/completions`` in
OpenRouter's shape (``modalities``, ``image_config``, images in ``message.images`` /
``delta.images``) and ``POST /v1/responses`` with the ``image_generation`` tool, driven by the
official OpenAI Python SDK (and the Node SDK for chat) against the real binary, with Gemini
(tests/e2e/fake_upstreams.py) and OpenAI (tests/e2e/fake_openai.py) faked.

Checked: what the fake upstream received (Gemini's ``generationConfig.imageConfig`` and
``inlineData`` reference images, OpenAI's ``size``/``partial_images``/``stream``), that the SDKs
parse the answers into their own types with the upstream's image bytes inside (whole and
streamed), that refusals name the parameter where the client wrote it (``image_config.image_size``,
``tools[0].size``), and that a request costs the same whichever door it came through, is
cached across doors, records its route in the ledger and replays under an ``Idempotency-Key``.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server, clean_env
from fake_openai import FakeOpenAI, StreamPlan, solid_png
from fake_upstreams import FakeGemini, Recorded, data_url, decode_data_url
from helpers import client, http
from imaging import parse_png
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseImageGenCallCompletedEvent,
    ResponseImageGenCallGeneratingEvent,
    ResponseImageGenCallInProgressEvent,
    ResponseImageGenCallPartialImageEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
)
from openai.types.responses.response_output_item import ImageGenerationCall
from test_credits import MASTER_KEY, bearer, create_key, credits, wait_for
from test_providers import GEMINI_KEY, assert_no_problems, gemini  # noqa: F401 - the fake's fixture is shared
from test_streaming import RawStream, fresh_prompt, read_all

NODE_DIR = Path(__file__).resolve().parent / "node"

# What the chat tests ask nano-banana-2 (Gemini 3.1 Flash Image) for, and what Gemini must get.
IMAGE_CONFIG = {"aspect_ratio": "16:9", "image_size": "2K"}
GEMINI_IMAGE_CONFIG = {"aspectRatio": "16:9", "imageSize": "2K"}
# nano-banana-2 at image_size 2K costs 101 credits per image (imgproxy-core/catalog/gemini.toml).
NANO_BANANA_2_AT_2K = 101

# The image tool as a Responses client declares it, on the fake OpenAI.
IMAGE_TOOL = {"type": "image_generation", "model": "gpt-image-2", "size": "1536x1024", "partial_images": 1}

# Every event of a streamed response with one image and one partial image, in order: the SDK's
# class for it and its `type`.
RESPONSE_EVENTS = [
    (ResponseCreatedEvent, "response.created"),
    (ResponseInProgressEvent, "response.in_progress"),
    (ResponseOutputItemAddedEvent, "response.output_item.added"),
    (ResponseImageGenCallInProgressEvent, "response.image_generation_call.in_progress"),
    (ResponseImageGenCallGeneratingEvent, "response.image_generation_call.generating"),
    (ResponseImageGenCallPartialImageEvent, "response.image_generation_call.partial_image"),
    (ResponseImageGenCallCompletedEvent, "response.image_generation_call.completed"),
    (ResponseOutputItemDoneEvent, "response.output_item.done"),
    (ResponseCompletedEvent, "response.completed"),
]

# Reference images a user attaches (distinct from everything the fakes make).
REFERENCE = solid_png(2001)
OTHER_REFERENCE = solid_png(2002)


# ------------------------------------------------------------------------------------------
# fixtures and helpers
# ------------------------------------------------------------------------------------------


@pytest.fixture
def server(imgproxy: ImgproxyFactory, gemini: FakeGemini, fake_openai: FakeOpenAI) -> Server:  # noqa: F811
    """A server on both fakes, with a master key (which is unmetered and may issue keys)."""
    return imgproxy.start(
        {
            "GEMINI_API_KEY": GEMINI_KEY,
            "GEMINI_BASE_URL": gemini.url,
            "OPENAI_API_KEY": OPENAI_TEST_KEY,
            "OPENAI_BASE_URL": f"{fake_openai.url}/v1",
            "IMGPROXY_MASTER_KEY": MASTER_KEY,
        }
    )


def extra(model: Any, name: str) -> Any:
    """A field the SDK's type does not declare (OpenRouter's `images`, imgproxy's
    `credits_used`), as the SDK kept it."""
    fields = model.model_extra or {}
    assert name in fields, f"{type(model).__name__} has no `{name}`: {model}"
    return fields[name]


def images_of(message: Any) -> list[bytes]:
    """The PNGs of a chat message's (or delta's) `images`, each an `image_url` data URL."""
    images = extra(message, "images")
    assert isinstance(images, list) and images, f"no images in {message}"
    decoded = []
    for image in images:
        assert image.get("type") == "image_url", image
        mime, data = decode_data_url(image["image_url"]["url"])
        assert mime == "image/png", mime
        parse_png(data)
        decoded.append(data)
    return decoded


def inline_images(call: Recorded) -> list[bytes]:
    """The images a Gemini call carried as `inlineData` parts, in order."""
    return [
        base64.b64decode(part["inlineData"]["data"])
        for content in call.json["contents"]
        for part in content["parts"]
        if "inlineData" in part
    ]


def text_of(call: Recorded) -> str:
    """The text parts of a Gemini call, joined."""
    return "\n".join(part["text"] for content in call.json["contents"] for part in content["parts"] if "text" in part)


def user_says(text: str) -> list[dict[str, Any]]:
    """A conversation of one user message."""
    return [{"role": "user", "content": text}]


def chat(sdk: Any, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    """A chat completion of ``messages`` on nano-banana-2 at 16:9, 2K, OpenRouter style
    (``sdk`` a client, or its ``with_raw_response``)."""
    return sdk.chat.completions.create(
        model="nano-banana-2",
        messages=messages,
        extra_body={"modalities": ["image", "text"], "image_config": IMAGE_CONFIG},
        **kwargs,
    )


def b64(data: str | None) -> bytes:
    assert data, "no base64 image"
    return base64.b64decode(data, validate=True)


# ------------------------------------------------------------------------------------------
# chat completions
# ------------------------------------------------------------------------------------------


def test_a_chat_completion_passes_image_config_to_gemini_and_answers_its_image(server: Server, gemini: FakeGemini) -> None:  # noqa: F811
    prompt = fresh_prompt("a lighthouse at dusk")
    completion = chat(
        client(server.url, api_key=MASTER_KEY),
        [{"role": "system", "content": "You draw."}, *user_says(prompt)],
        temperature=0.7,  # a chat client's habit: accepted, meaningless to an image model
    )

    (call,) = gemini.generate_calls()
    assert call.path == "/v1beta/models/gemini-3.1-flash-image:generateContent", call.path
    config = call.json["generationConfig"]
    assert config.get("imageConfig") == GEMINI_IMAGE_CONFIG, config
    assert "IMAGE" in config.get("responseModalities", []), config
    assert text_of(call) == prompt, "the prompt is the last user message's text (the system message is not)"
    assert inline_images(call) == []
    assert_no_problems(gemini)

    assert completion.object == "chat.completion" and completion.model == "nano-banana-2"
    (choice,) = completion.choices
    assert (choice.index, choice.finish_reason, choice.message.role) == (0, "stop", "assistant")
    assert images_of(choice.message) == gemini.final_images, "the answer's image is not the one Gemini made"
    assert completion.usage is not None and completion.usage.total_tokens == 1300, completion.usage


def test_a_reference_image_in_the_user_message_reaches_gemini_as_inline_data(server: Server, gemini: FakeGemini) -> None:  # noqa: F811
    prompt = fresh_prompt("the same bottle, studio light")
    completion = chat(
        client(server.url, api_key=MASTER_KEY),
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": prompt},
                    {"type": "image_url", "image_url": {"url": data_url(REFERENCE)}},
                ],
            }
        ],
    )
    (call,) = gemini.generate_calls()
    assert inline_images(call) == [REFERENCE], "the attached image must reach Gemini unchanged"
    assert text_of(call) == prompt
    assert call.json["generationConfig"].get("imageConfig") == GEMINI_IMAGE_CONFIG
    assert images_of(completion.choices[0].message) == gemini.final_images
    assert_no_problems(gemini)


@pytest.mark.parametrize("carried_in", ["images", "content"])
def test_in_a_conversation_the_assistants_latest_image_is_the_one_edited(
    server: Server, gemini: FakeGemini, carried_in: str  # noqa: F811
) -> None:
    sdk = client(server.url, api_key=MASTER_KEY)
    first_prompt = fresh_prompt("a cat on a sofa")
    first_turn = {
        "role": "user",
        "content": [
            {"type": "text", "text": first_prompt},
            {"type": "image_url", "image_url": {"url": data_url(OTHER_REFERENCE)}},
        ],
    }
    first = chat(sdk, [first_turn])
    made = first.choices[0].message
    (made_image,) = images_of(made)

    # The answer goes back as the assistant's message, OpenRouter's way (`images`) or as
    # content parts; the user's earlier attachment is superseded by what the assistant made.
    earlier_images = extra(made, "images")
    assistant: dict[str, Any] = {"role": "assistant", "content": None, "images": earlier_images}
    if carried_in == "content":
        assistant = {"role": "assistant", "content": [{"type": "text", "text": "Here it is."}, *earlier_images]}
    second = chat(sdk, [first_turn, assistant, *user_says("make it blue")])

    first_call, second_call = gemini.generate_calls()
    assert inline_images(first_call) == [OTHER_REFERENCE]
    assert inline_images(second_call) == [made_image], "the image edited must be the assistant's latest"
    assert text_of(second_call) == "make it blue"
    assert images_of(second.choices[0].message) == [gemini.final_images[1]]
    assert_no_problems(gemini)


def test_a_chat_completion_answers_n_images_as_stored_image_urls_on_request(server: Server, gemini: FakeGemini) -> None:  # noqa: F811
    completion = client(server.url, api_key=MASTER_KEY).chat.completions.create(
        model="nano-banana-2",
        messages=user_says(fresh_prompt("two pears")),
        n=2,
        extra_body={"image_config": IMAGE_CONFIG, "response_format": "url"},
    )
    (choice,) = completion.choices
    urls = [image["image_url"]["url"] for image in extra(choice.message, "images")]
    assert len(urls) == 2 and all(url.startswith(f"{server.url}/images/") for url in urls), urls
    fetched = []
    for url in urls:
        status, headers, body = http("GET", url)
        assert status == 200 and headers.get("content-type") == "image/png", (url, status, headers)
        fetched.append(body)
    assert sorted(fetched) == sorted(gemini.final_images), "the stored images are not the ones Gemini made"
    assert len(gemini.generate_calls()) == 2, "n=2 is two Gemini calls (one image each)"


def test_a_streamed_chat_completion_carries_the_image_in_delta_images(server: Server, gemini: FakeGemini) -> None:  # noqa: F811
    chunks = list(chat(client(server.url, api_key=MASTER_KEY), user_says(fresh_prompt("a kite over dunes")), stream=True))

    assert len(chunks) == 2, chunks
    assert all(c.object == "chat.completion.chunk" for c in chunks), chunks
    assert len({c.id for c in chunks}) == 1, "the chunks of one completion share its id"
    message, end = chunks
    (delta,) = message.choices
    assert delta.finish_reason is None and delta.delta.role == "assistant"
    assert images_of(delta.delta) == gemini.final_images, "the streamed image is not the one Gemini made"
    (last,) = end.choices
    assert last.finish_reason == "stop"
    assert end.usage is not None and end.usage.total_tokens == 1300, end.usage
    (call,) = gemini.generate_calls()
    assert call.json["generationConfig"].get("imageConfig") == GEMINI_IMAGE_CONFIG


def test_a_streamed_chat_completion_is_two_data_chunks_then_done_on_the_wire(server: Server, gemini: FakeGemini) -> None:  # noqa: F811
    body = {
        "model": "nano-banana-2",
        "messages": user_says(fresh_prompt("a heron")),
        "image_config": IMAGE_CONFIG,
        "stream": True,
    }
    events = read_all(RawStream(server, body, path="/v1/chat/completions", headers=bearer(MASTER_KEY)))

    assert [sse.event for sse in events] == [None, None, None], "chat chunks are plain `data:` lines, as OpenAI sends them"
    message, end, done = events
    assert done.data == "[DONE]"
    assert [message.json["object"], end.json["object"]] == ["chat.completion.chunk"] * 2
    (image,) = message.json["choices"][0]["delta"]["images"]
    assert decode_data_url(image["image_url"]["url"])[1] == gemini.final_images[0]
    assert end.json["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}], end.json


def test_the_node_sdk_reads_chat_images_whole_and_streamed(server: Server, gemini: FakeGemini) -> None:  # noqa: F811
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("node and tests/e2e/node/node_modules are needed: tests/run installs them")
    done = subprocess.run(
        ["node", "chat_images.mjs", f"{server.url}/v1", MASTER_KEY, "nano-banana-2", fresh_prompt("a node fox")],
        cwd=NODE_DIR, env=clean_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)

    whole_call, streamed_call = gemini.generate_calls()
    for call in (whole_call, streamed_call):
        assert call.json["generationConfig"].get("imageConfig") == GEMINI_IMAGE_CONFIG
    whole = seen["whole"]
    assert (whole["object"], whole["role"], whole["finish_reason"]) == ("chat.completion", "assistant", "stop"), whole
    assert [decode_data_url(url)[1] for url in whole["images"]] == [gemini.final_images[0]]

    message, end = seen["chunks"]
    assert {message["object"], end["object"]} == {"chat.completion.chunk"} and message["id"] == end["id"], seen["chunks"]
    assert message["finish_reason"] is None
    assert [decode_data_url(url)[1] for url in message["images"]] == [gemini.final_images[1]]
    assert (end["finish_reason"], end["images"]) == ("stop", [])
    assert end["usage"]["total_tokens"] == 1300, end
    assert_no_problems(gemini)


# ------------------------------------------------------------------------------------------
# responses
# ------------------------------------------------------------------------------------------


def test_a_streamed_response_yields_the_sdks_typed_image_generation_events(server: Server, fake_openai: FakeOpenAI) -> None:
    prompt = fresh_prompt("a harbour at dawn")
    events = list(
        client(server.url, api_key=MASTER_KEY).responses.create(model="gpt-5", input=prompt, tools=[IMAGE_TOOL], stream=True)
    )

    assert [(type(e), e.type) for e in events] == RESPONSE_EVENTS, [(type(e).__name__, e.type) for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created, in_progress, added, _, _, partial, completed_call, done, completed = events
    assert created.response.status == in_progress.response.status == "in_progress"
    assert added.item.type == "image_generation_call" and added.item.status == "in_progress"
    item_id = added.item.id
    assert partial.item_id == completed_call.item_id == item_id
    assert partial.partial_image_index == 0
    assert b64(partial.partial_image_b64) == fake_openai.partial_images[0], "the partial image is not the upstream's"

    assert isinstance(done.item, ImageGenerationCall) and done.item.id == item_id and done.item.status == "completed"
    response = completed.response
    assert response.id == created.response.id and response.status == "completed" and response.model == "gpt-5"
    (item,) = response.output
    assert isinstance(item, ImageGenerationCall) and item.action == "generate"
    assert b64(item.result) == b64(done.item.result) == fake_openai.images[0], "the result is not the upstream's image"
    png = parse_png(b64(item.result))
    assert item.size == f"{png.width}x{png.height}" and item.output_format == "png", item

    (upstream,) = fake_openai.image_requests()
    assert upstream.path == "/v1/images/generations"
    body = upstream.json
    assert (body.get("model"), body.get("prompt")) == ("gpt-image-2", prompt), body
    assert (body.get("size"), body.get("partial_images"), body.get("stream")) == ("1536x1024", 1, True), body
    assert fake_openai.wait_stream_finished().outcome == "completed"


def test_a_whole_response_holds_one_image_generation_call_item(server: Server, fake_openai: FakeOpenAI) -> None:
    prompt = fresh_prompt("a windmill in fog")
    # The tool is declared once, for streamed and whole responses alike: `partial_images`
    # means nothing to a whole one.
    response = client(server.url, api_key=MASTER_KEY).responses.create(model="gpt-5", input=prompt, tools=[IMAGE_TOOL])

    assert response.object == "response" and response.status == "completed" and response.model == "gpt-5"
    (item,) = response.output
    assert isinstance(item, ImageGenerationCall), item
    assert (item.type, item.status, item.action) == ("image_generation_call", "completed", "generate")
    assert b64(item.result) == fake_openai.images[0]
    (upstream,) = fake_openai.image_requests()
    body = upstream.json
    assert body.get("size") == "1536x1024" and body.get("prompt") == prompt, body
    assert "stream" not in body and "partial_images" not in body, f"a whole response must not stream upstream: {body}"


def test_an_earlier_image_generation_call_in_the_input_is_edited(server: Server, fake_openai: FakeOpenAI) -> None:
    sdk = client(server.url, api_key=MASTER_KEY)
    tool = {"type": "image_generation", "model": "gpt-image-2", "size": "1024x1024"}
    first = sdk.responses.create(model="gpt-5", input=fresh_prompt("a fox"), tools=[tool])
    (made,) = first.output
    second = sdk.responses.create(
        model="gpt-5",
        input=[
            {"role": "user", "content": "a fox"},
            {"type": "image_generation_call", "id": made.id, "status": "completed", "result": made.result},
            {"role": "user", "content": [{"type": "input_text", "text": "now in snow"}]},
        ],
        tools=[tool],
    )
    (item,) = second.output
    assert item.action == "edit", item
    assert b64(item.result) == fake_openai.images[1]
    (edit,) = fake_openai.edit_requests()
    sent = [part.data for part in edit.files] if edit.is_multipart else None
    assert sent == [b64(made.result)], f"the edited image must be the earlier result: {edit.part_summary()}"
    assert edit.form.get("prompt") == "now in snow", edit.form


def test_an_upstream_failure_mid_stream_is_an_error_event_then_response_failed(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.then(StreamPlan(fail_after=1))
    events = list(
        client(server.url, api_key=MASTER_KEY).responses.create(
            model="gpt-5", input=fresh_prompt("a storm"), tools=[IMAGE_TOOL], stream=True
        )
    )
    types = [e.type for e in events]
    assert types[-2:] == ["error", "response.failed"], types
    assert "response.completed" not in types and "response.image_generation_call.partial_image" in types, types
    error, failed = events[-2:]
    assert isinstance(error, ResponseErrorEvent) and error.message, error
    assert isinstance(failed, ResponseFailedEvent) and failed.response.status == "failed", failed
    assert failed.response.error is not None and failed.response.error.message, failed.response
    assert fake_openai.wait_stream_finished().outcome == "failed"


# ------------------------------------------------------------------------------------------
# refusals in the surface's own terms
# ------------------------------------------------------------------------------------------

A_RED_SQUARE = user_says("a red square")

CHAT_REFUSALS = {
    "text-model": ({"model": "gpt-4o", "messages": A_RED_SQUARE}, "model"),
    "text-only-modalities": ({"model": "nano-banana-2", "messages": A_RED_SQUARE, "modalities": ["text"]}, "modalities"),
    "size-the-model-cannot-make": (
        {"model": "nano-banana-pro", "messages": A_RED_SQUARE, "image_config": {"image_size": "512"}},
        "image_config.image_size",
    ),
    "unknown-aspect-ratio": (
        {"model": "nano-banana-2", "messages": A_RED_SQUARE, "image_config": {"aspect_ratio": "7:5"}},
        "image_config.aspect_ratio",
    ),
    "no-user-message": ({"model": "nano-banana-2", "messages": [{"role": "system", "content": "hi"}]}, "messages"),
    "audio-part": (
        {
            "model": "nano-banana-2",
            "messages": [
                {"role": "system", "content": "You draw."},
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]},
            ],
        },
        "messages[1].content[0]",
    ),
}

RESPONSES_REFUSALS = {
    "bad-size": ({"tools": [{"type": "image_generation", "model": "gpt-image-2", "size": "1000x1001"}]}, "tools[0].size"),
    "text-model-as-tool-model": ({"tools": [{"type": "image_generation", "model": "gpt-4o"}]}, "tools[0].model"),
    "bad-quality-of-the-second-tool": (
        {"tools": [{"type": "web_search"}, {"type": "image_generation", "model": "gpt-image-2", "quality": "ultra"}]},
        "tools[1].quality",
    ),
    "no-image-tool": ({"tools": [{"type": "web_search"}]}, "tools"),
}


def assert_refused(call: Any, param: str, *fakes: Any) -> None:
    """``call()`` is a 400 `invalid_request_error` naming ``param``, and no fake was called."""
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    error = caught.value.body
    assert isinstance(error, dict), error
    assert (caught.value.status_code, error.get("type"), error.get("param")) == (400, "invalid_request_error", param), error
    assert error.get("message"), error
    for fake in fakes:
        assert not fake.requests, f"a refused request reached {type(fake).__name__}"


@pytest.mark.parametrize("case", CHAT_REFUSALS)
def test_chat_refusals_name_the_parameter_as_chat_spells_it(
    server: Server, gemini: FakeGemini, fake_openai: FakeOpenAI, case: str  # noqa: F811
) -> None:
    body, param = CHAT_REFUSALS[case]
    sdk = client(server.url, api_key=MASTER_KEY)
    request = {k: v for k, v in body.items() if k in ("model", "messages")}
    extra_body = {k: v for k, v in body.items() if k not in request}
    assert_refused(lambda: sdk.chat.completions.create(**request, extra_body=extra_body), param, gemini, fake_openai)


@pytest.mark.parametrize("case", RESPONSES_REFUSALS)
def test_responses_refusals_name_the_tool_parameter(
    server: Server, gemini: FakeGemini, fake_openai: FakeOpenAI, case: str  # noqa: F811
) -> None:
    body, param = RESPONSES_REFUSALS[case]
    sdk = client(server.url, api_key=MASTER_KEY)
    assert_refused(lambda: sdk.responses.create(model="gpt-5", input="a red square", **body), param, gemini, fake_openai)


def test_a_streamed_request_is_refused_before_the_stream_opens(
    server: Server, gemini: FakeGemini, fake_openai: FakeOpenAI  # noqa: F811
) -> None:
    sdk = client(server.url, api_key=MASTER_KEY)
    bad_tool = {**IMAGE_TOOL, "size": "1000x1001"}
    assert_refused(
        lambda: list(sdk.responses.create(model="gpt-5", input="a red square", tools=[bad_tool], stream=True)),
        "tools[0].size",
        fake_openai,
    )
    assert_refused(
        lambda: list(
            sdk.chat.completions.create(
                model="nano-banana-pro", messages=A_RED_SQUARE, stream=True, extra_body={"image_config": {"image_size": "512"}}
            )
        ),
        "image_config.image_size",
        gemini,
    )


# ------------------------------------------------------------------------------------------
# credits, cache, ledger, idempotency
# ------------------------------------------------------------------------------------------


def through_images(sdk: openai.OpenAI, prompt: str, **kwargs: Any) -> Any:
    return sdk.images.with_raw_response.generate(model="nano-banana-2", prompt=prompt, extra_body=IMAGE_CONFIG, **kwargs)


def through_chat(sdk: openai.OpenAI, prompt: str, **kwargs: Any) -> Any:
    return chat(sdk.with_raw_response, user_says(prompt), **kwargs)


def through_responses(sdk: openai.OpenAI, prompt: str, **kwargs: Any) -> Any:
    tool = {"type": "image_generation", "model": "nano-banana-2", **IMAGE_CONFIG}
    return sdk.responses.with_raw_response.create(model="gpt-5", input=prompt, tools=[tool], **kwargs)


# Each door, by the route its charges record: how to ask it, and how its answer's image is read.
DOORS = {
    "/v1/images/generations": (through_images, lambda a: b64(a.data[0].b64_json)),
    "/v1/chat/completions": (through_chat, lambda a: images_of(a.choices[0].message)[0]),
    "/v1/responses": (through_responses, lambda a: b64(a.output[0].result)),
}


def ledger_of(server: Server, secret: str) -> list[dict[str, Any]]:
    """The key's ledger rows without its opening credit, oldest first (`GET /v1/credits`)."""
    return [row for row in reversed(credits(server, secret)["recent"]) if row["kind"] != "credit"]


def test_the_same_request_costs_the_same_through_every_door_and_the_ledger_names_the_door(
    server: Server, gemini: FakeGemini  # noqa: F811
) -> None:
    prompt = fresh_prompt("a brass compass on a map")
    for route, (through, image_of) in DOORS.items():
        _, secret = create_key(server, credits=1000)
        raw = through(client(server.url, api_key=secret), prompt)
        answer = raw.parse()
        assert raw.headers.get("x-cache-status") == "MISS-GENERATED", f"{route}: each key is its own tenant"
        charged = extra(answer, "credits_used")
        assert charged == NANO_BANANA_2_AT_2K, f"{route} charged {charged}"
        assert raw.headers.get("x-credits-remaining") == str(1000 - NANO_BANANA_2_AT_2K), route
        assert credits(server, secret)["balance"] == 1000 - NANO_BANANA_2_AT_2K, route
        assert image_of(answer) == gemini.final_images[-1], f"{route} answered another image than Gemini's"

        rows = ledger_of(server, secret)
        assert [row["kind"] for row in rows] == ["reserve", "settle"], rows
        reserve, settle = rows
        assert reserve["request_id"] == settle["request_id"] == raw.headers.get("x-request-id"), rows
        assert reserve["inputs"]["surface"] == route, f"the charge must record its route: {reserve['inputs']}"
        assert reserve["model"] == settle["model"] == "nano-banana-2"
        assert settle["inputs"]["kept"] == NANO_BANANA_2_AT_2K and settle["inputs"]["surface"] == route, settle

    calls = gemini.generate_calls()
    assert len(calls) == len(DOORS)
    assert len({json.dumps(call.json, sort_keys=True) for call in calls}) == 1, "every door must ask Gemini the same"
    assert_no_problems(gemini)


def test_one_key_gets_the_image_made_through_one_door_from_the_cache_through_the_others(
    server: Server, gemini: FakeGemini  # noqa: F811
) -> None:
    _, secret = create_key(server, credits=1000)
    sdk = client(server.url, api_key=secret)
    prompt = fresh_prompt("a paper boat in the rain")
    seen = []
    for route, (through, image_of) in DOORS.items():
        raw = through(sdk, prompt)
        answer = raw.parse()
        seen.append((route, raw.headers.get("x-cache-status"), extra(answer, "credits_used"), image_of(answer)))

    (made,) = gemini.final_images
    assert [(route, status, used) for route, status, used, _ in seen] == [
        ("/v1/images/generations", "MISS-GENERATED", NANO_BANANA_2_AT_2K),
        ("/v1/chat/completions", "HIT", 0),
        ("/v1/responses", "HIT", 0),
    ]
    assert all(image == made for *_, image in seen), "a hit must answer the image the miss made"
    assert len(gemini.generate_calls()) == 1
    assert credits(server, secret)["balance"] == 1000 - NANO_BANANA_2_AT_2K
    assert [row["kind"] for row in ledger_of(server, secret)] == ["reserve", "settle"], "a hit is not charged"


def test_an_idempotency_key_replays_a_chat_completion_without_charging_again(server: Server, gemini: FakeGemini) -> None:  # noqa: F811
    _, secret = create_key(server, credits=1000)
    sdk = client(server.url, api_key=secret)
    prompt = fresh_prompt("a teapot in the snow")
    headers = {"Idempotency-Key": f"chat-{secrets.token_hex(6)}"}

    first = through_chat(sdk, prompt, extra_headers=headers)
    assert first.headers.get("idempotent-replayed") is None
    assert extra(first.parse(), "credits_used") == NANO_BANANA_2_AT_2K
    again = through_chat(sdk, prompt, extra_headers=headers)
    assert again.headers.get("idempotent-replayed") == "true"
    replayed = again.parse()
    assert extra(replayed, "credits_used") == 0
    assert images_of(replayed.choices[0].message) == images_of(first.parse().choices[0].message) == gemini.final_images

    assert len(gemini.generate_calls()) == 1
    wait_for(lambda: credits(server, secret)["balance"] == 1000 - NANO_BANANA_2_AT_2K, 5, "the one charge")
    charges = ledger_of(server, secret)
    assert sum(row["amount"] for row in charges) == -NANO_BANANA_2_AT_2K, charges

    # The same key for another conversation is a conflict, not a new image.
    with pytest.raises(openai.APIStatusError) as caught:
        through_chat(sdk, fresh_prompt("a kettle"), extra_headers=headers)
    assert caught.value.status_code == 409, caught.value
    assert len(gemini.generate_calls()) == 1
