"""Streaming (``stream: true``) end to end: the real binary driven by the official OpenAI SDK and
by raw HTTP, with the OpenAI provider pointed at tests/e2e/fake_openai.py, which answers
streaming requests with an event stream (providers.md §1.4) as a ``StreamPlan`` says: partial
images, completed events, delays, an error event mid-stream, or a hang.

Checked: the SDK yields the upstream's events (partial images and completed events, the bytes
intact); the wire format (``text/event-stream``, ``event: <type>`` + ``data: <json>``, ``:``
comment lines as keep-alives while the upstream is slow); a mid-stream upstream failure reaches
the client as a ``data: {"error": ...}`` event (``openai.APIError`` in the SDK) and a validation
error is a plain 400 envelope before any stream; the placeholder streams completed events only;
and on a metered key a stream costs what a plain request costs, and a failed or abandoned stream
is refunded in full.
"""

from __future__ import annotations

import base64
import http.client as http_client
import itertools
import json
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import openai
import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server
from fake_openai import DEFAULT_USAGE, FakeOpenAI, StreamPlan
from fake_upstreams import noise_png
from helpers import assert_error_envelope, client, http
from imaging import parse_png
# GPT_LOW: gpt-image-2 at quality=low costs 6 credits per image (imgproxy-core/catalog/openai.toml).
from test_credits import GPT_LOW, balance, bearer, create_key, start_openai_server, wait_for

IMAGE = noise_png(24, seed=3)

_PROMPTS = itertools.count()


def fresh_prompt(text: str) -> str:
    """A prompt no other request used: streamed answers are about generating, not the cache."""
    return f"{text} #{next(_PROMPTS)}-{secrets.token_hex(3)}"


def decode(b64: str | None) -> bytes:
    assert b64, "event has no b64_json"
    return base64.b64decode(b64, validate=True)


# ------------------------------------------------------------------------------------------
# raw server-sent events
# ------------------------------------------------------------------------------------------


@dataclass
class Sse:
    """One server-sent event, with the comment lines that came before it."""

    event: str | None
    data: str
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class RawStream:
    """A POST read line by line as server-sent events (http.client undoes the chunking)."""

    def __init__(
        self,
        server: Server,
        body: dict[str, Any],
        *,
        path: str = "/v1/images/generations",
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.conn = http_client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
        self.conn.connect()
        # http.client hands the socket over to the response (and forgets it) when the answer
        # will close the connection: keep it, so that close() really closes it.
        self.sock = self.conn.sock
        self.conn.request(
            "POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
        )
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}
        self.trailing_comments: list[str] = []
        self.ended = False  # the body ended (cleanly or not) rather than timing out

    def body(self) -> bytes:
        return self.response.read()

    def events(self) -> Iterator[Sse]:
        """Events until the body ends. Comment lines are attached to the next event (or, after
        the last one, kept in ``trailing_comments``)."""
        comments: list[str] = []
        event: str | None = None
        data: list[str] = []
        while True:
            try:
                raw = self.response.readline()
            except http_client.IncompleteRead:
                raw = b""
            if not raw:
                self.ended = True
                if data:
                    yield Sse(event, "\n".join(data), comments)
                    comments = []
                self.trailing_comments = comments
                return
            line = raw.decode("utf-8").rstrip("\r\n")
            if line == "":
                if data or event is not None:
                    yield Sse(event, "\n".join(data), comments)
                    comments, event, data = [], None, []
                continue
            if line.startswith(":"):
                comments.append(line)
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)

    def close(self) -> None:
        """Closes the connection at once (FIN sent), whatever is left unread."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.response.close()
        self.sock.close()
        self.conn.close()


def assert_event_stream(stream: RawStream) -> None:
    assert stream.status == 200, f"expected 200, got {stream.status}: {stream.body()[:500]!r}"
    content_type = stream.headers.get("content-type", "")
    assert content_type.split(";")[0].strip() == "text/event-stream", f"Content-Type {content_type!r}"


def read_all(stream: RawStream) -> list[Sse]:
    """Checks that ``stream`` is an event stream and reads it to the end; closes it either way."""
    try:
        assert_event_stream(stream)
        return list(stream.events())
    finally:
        stream.close()


def assert_well_formed(events: list[Sse]) -> None:
    """Every event is ``event: <type>`` + ``data: <json whose type is that>`` (a final
    ``data: [DONE]`` aside)."""
    for index, sse in enumerate(events):
        if sse.data == "[DONE]":
            assert index == len(events) - 1, "data: [DONE] must be the last event"
            continue
        payload = sse.json
        assert isinstance(payload, dict), sse
        if "error" in payload:
            continue
        assert sse.event is not None, f"event without an `event:` line: {sse.data[:200]}"
        assert payload.get("type") == sse.event, f"`event: {sse.event}` carries data of type {payload.get('type')!r}"


def stream_body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-image-2", "prompt": fresh_prompt("a harbour at dawn"), "stream": True, **fields}


# ------------------------------------------------------------------------------------------
# the SDK against gpt-image-2 (the fake upstream)
# ------------------------------------------------------------------------------------------


def test_sdk_streamed_generation_yields_the_upstreams_partials_then_the_completed_image(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    fake_openai.stream_plan(delay=0.05)
    prompt = fresh_prompt("a lighthouse in a storm")
    events = list(
        client(openai_server.url, timeout=30).images.generate(
            model="gpt-image-2", prompt=prompt, stream=True, partial_images=2
        )
    )
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ], events
    partials, completed = events[:2], events[2]
    assert [p.partial_image_index for p in partials] == [0, 1]
    assert [decode(p.b64_json) for p in partials] == fake_openai.partial_images[:2], "partials are not the upstream's"
    for p in partials:
        parse_png(decode(p.b64_json))
        assert isinstance(p.created_at, int) and p.size and p.quality and p.background and p.output_format
    assert decode(completed.b64_json) == fake_openai.images[0], "the completed image is not the upstream's"
    assert isinstance(completed.created_at, int) and completed.output_format == "png"
    assert completed.usage is not None and completed.usage.to_dict() == DEFAULT_USAGE

    (upstream,) = fake_openai.image_requests()
    body = upstream.json
    assert body.get("stream") is True and body.get("partial_images") == 2, f"the upstream was not asked to stream: {body}"
    assert body.get("model") == "gpt-image-2" and body.get("prompt") == prompt
    assert "response_format" not in body
    assert fake_openai.wait_stream_finished().outcome == "completed"


def test_sdk_stream_whose_upstream_ends_with_a_done_line(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    fake_openai.stream_plan(done=True)
    events = list(
        client(openai_server.url, timeout=30).images.generate(
            model="gpt-image-2", prompt=fresh_prompt("a kite"), stream=True, partial_images=1
        )
    )
    assert [e.type for e in events] == ["image_generation.partial_image", "image_generation.completed"], events
    assert decode(events[0].b64_json) == fake_openai.partial_images[0]
    assert decode(events[1].b64_json) == fake_openai.images[0]
    assert fake_openai.image_requests()[0].json.get("stream") is True


def test_sdk_stream_without_partial_images_yields_one_completed_event(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    # Whether imgproxy streams from the upstream here or not is its choice: the client gets
    # exactly the upstream's image as one completed event.
    events = list(
        client(openai_server.url, timeout=30).images.generate(model="gpt-image-2", prompt=fresh_prompt("a kite"), stream=True)
    )
    assert [e.type for e in events] == ["image_generation.completed"], events
    assert decode(events[0].b64_json) == fake_openai.images[0]
    assert len(fake_openai.image_requests()) == 1


def test_sdk_streamed_edit_yields_image_edit_events(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.stream_plan(delay=0.05)
    events = list(
        client(openai_server.url, timeout=30).images.edit(
            model="gpt-image-2",
            image=("photo.png", IMAGE, "image/png"),
            prompt=fresh_prompt("add a red scarf"),
            stream=True,
            partial_images=1,
        )
    )
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"], events
    assert events[0].partial_image_index == 0
    assert decode(events[0].b64_json) == fake_openai.partial_images[0]
    assert decode(events[1].b64_json) == fake_openai.images[0]
    assert events[1].usage is not None

    (upstream,) = fake_openai.edit_requests()
    assert upstream.is_multipart
    form = upstream.form
    assert form.get("stream") == "true" and form.get("partial_images") == "1", f"text parts: {upstream.part_summary()}"
    assert [p.data for p in upstream.parts_named("image[]")] == [IMAGE]


def test_sdk_mid_stream_upstream_failure_raises_api_error(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.then(StreamPlan(delay=0.05, fail_after=1))
    got: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        for event in client(openai_server.url, timeout=30).images.generate(
            model="gpt-image-2", prompt=fresh_prompt("a bridge"), stream=True, partial_images=2
        ):
            got.append(event)
    assert [e.type for e in got] == ["image_generation.partial_image"], got
    assert caught.value.message, caught.value
    assert OPENAI_TEST_KEY not in str(caught.value.body)
    assert fake_openai.wait_stream_finished().outcome == "failed"


def test_a_validation_error_is_a_plain_400_before_any_stream(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    status, headers, body = http(
        "POST", f"{openai_server.url}/v1/images/generations", json_body=stream_body(size="13x13", partial_images=1)
    )
    assert_error_envelope(status, headers, body, expected_status=400, param="size")

    with pytest.raises(openai.BadRequestError) as caught:
        client(openai_server.url).images.generate(
            model="gpt-image-2", prompt="p", size="13x13", stream=True, partial_images=1
        )
    assert caught.value.param == "size"
    assert fake_openai.requests == [], "a refused request must not reach the upstream"


# ------------------------------------------------------------------------------------------
# the placeholder model
# ------------------------------------------------------------------------------------------


def test_placeholder_streams_n_completed_events_and_no_partials(server: Server) -> None:
    events = list(
        client(server.url, timeout=30).images.generate(
            model="placeholder", prompt=fresh_prompt("a tidal pool"), size="64x64", n=2, stream=True
        )
    )
    assert [e.type for e in events] == ["image_generation.completed"] * 2, events
    images = [decode(e.b64_json) for e in events]
    assert images[0] != images[1], "the n images of one request must differ"
    for data in images:
        png = parse_png(data)
        assert (png.width, png.height) == (64, 64)


def test_placeholder_streamed_edit_gives_image_edit_completed_events(server: Server) -> None:
    events = list(
        client(server.url, timeout=30).images.edit(
            model="placeholder",
            image=("in.png", IMAGE, "image/png"),
            prompt=fresh_prompt("a tidal pool"),
            size="64x64",
            n=2,
            stream=True,
        )
    )
    assert [e.type for e in events] == ["image_edit.completed"] * 2, events
    for event in events:
        png = parse_png(decode(event.b64_json))
        assert (png.width, png.height) == (64, 64)


def test_placeholder_refuses_partial_images(server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(server.url).images.generate(
            model="placeholder", prompt="p", size="64x64", stream=True, partial_images=2
        )
    assert caught.value.param == "partial_images"
    status, headers, body = http(
        "POST",
        f"{server.url}/v1/images/generations",
        json_body={"model": "placeholder", "prompt": "p", "size": "64x64", "stream": True, "partial_images": 2},
    )
    assert_error_envelope(status, headers, body, expected_status=400, param="partial_images")


# ------------------------------------------------------------------------------------------
# the wire format, raw
# ------------------------------------------------------------------------------------------


def test_raw_stream_is_text_event_stream_with_event_and_data_lines(openai_server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.stream_plan(delay=0.05)
    stream = RawStream(openai_server, stream_body(partial_images=1))
    events = read_all(stream)
    assert stream.ended
    assert_well_formed(events)
    typed = [e for e in events if e.data != "[DONE]"]
    assert [e.event for e in typed] == ["image_generation.partial_image", "image_generation.completed"], [
        (e.event, e.data[:80]) for e in events
    ]
    assert decode(typed[0].json["b64_json"]) == fake_openai.partial_images[0]
    assert typed[0].json["partial_image_index"] == 0
    assert decode(typed[1].json["b64_json"]) == fake_openai.images[0]
    assert isinstance(typed[1].json.get("usage"), dict)


def test_raw_stream_sends_keep_alive_comments_while_the_upstream_is_slow(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    # The server comments every 10 s while waiting: an upstream 11.5 s late with its first
    # event must leave at least one comment line before it.
    fake_openai.stream_plan(first_delay=11.5)
    started = time.monotonic()
    stream = RawStream(openai_server, stream_body(partial_images=1), timeout=30)
    events = read_all(stream)
    assert time.monotonic() - started >= 11.0, "the fake did not delay the first event"
    assert_well_formed(events)
    assert [e.event for e in events] == ["image_generation.partial_image", "image_generation.completed"], [
        (e.event, e.data[:80]) for e in events
    ]
    assert events[0].comments, "no `:` comment line (keep-alive) came while the upstream was silent for 11.5 s"
    assert any(c.strip() in (": keep-alive", ":keep-alive") for c in events[0].comments), events[0].comments


def test_raw_mid_stream_failure_is_a_data_line_with_an_error_object_then_the_end(
    openai_server: Server, fake_openai: FakeOpenAI
) -> None:
    fake_openai.then(StreamPlan(delay=0.05, fail_after=1))
    stream = RawStream(openai_server, stream_body(partial_images=2))
    events = read_all(stream)
    assert stream.ended, "the stream must end after the error"
    assert_well_formed(events)
    assert events and events[0].event == "image_generation.partial_image", [(e.event, e.data[:80]) for e in events]
    errors = [e for e in events if e.data != "[DONE]" and "error" in e.json]
    assert len(errors) == 1, f"expected one error event: {[(e.event, e.data[:120]) for e in events]}"
    error = errors[0].json["error"]
    assert isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"], error
    after = events[events.index(errors[0]) + 1 :]
    assert all(e.data == "[DONE]" for e in after), f"events after the error: {[(e.event, e.data[:80]) for e in after]}"
    assert not [e for e in events if e.event == "image_generation.completed"]
    assert OPENAI_TEST_KEY not in json.dumps(error)


# ------------------------------------------------------------------------------------------
# credits
# ------------------------------------------------------------------------------------------


def test_a_streamed_generation_costs_what_a_plain_one_does_and_a_failed_stream_is_refunded(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI
) -> None:
    server = start_openai_server(imgproxy, fake_openai)
    _, secret = create_key(server, credits=100)
    sdk = client(server.url, api_key=secret, timeout=30)
    start = balance(server, secret)
    assert start == 100

    sdk.images.generate(model="gpt-image-2", prompt=fresh_prompt("a ledger"), quality="low")
    after_plain = balance(server, secret)
    plain_cost = start - after_plain
    assert plain_cost == GPT_LOW, f"a plain gpt-image-2 low generation cost {plain_cost}, expected {GPT_LOW}"

    fake_openai.stream_plan(delay=0.05)
    events = list(
        sdk.images.generate(model="gpt-image-2", prompt=fresh_prompt("a ledger"), quality="low", stream=True, partial_images=1)
    )
    assert [e.type for e in events] == ["image_generation.partial_image", "image_generation.completed"], events
    wait_for(lambda: balance(server, secret) <= after_plain - plain_cost, 5, "the streamed generation to be charged")
    after_stream = balance(server, secret)
    assert after_plain - after_stream == plain_cost, (
        f"a streamed generation cost {after_plain - after_stream}, the same plain one {plain_cost}"
    )

    # An upstream failure mid-stream gives everything back.
    fake_openai.then(StreamPlan(delay=0.05, fail_after=1))
    with pytest.raises(openai.APIError):
        for _ in sdk.images.generate(
            model="gpt-image-2", prompt=fresh_prompt("a ledger"), quality="low", stream=True, partial_images=2
        ):
            pass
    assert fake_openai.wait_stream_finished().outcome == "failed"
    wait_for(lambda: balance(server, secret) == after_stream, 5, "the failed stream to be refunded")
    time.sleep(0.3)
    assert balance(server, secret) == after_stream, "a failed stream must be refunded exactly, once"


def test_a_client_that_disconnects_mid_stream_pays_only_for_what_it_received(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI
) -> None:
    server = start_openai_server(imgproxy, fake_openai)
    _, secret = create_key(server, credits=100)
    start = balance(server, secret)

    # Gone before anything arrived: the upstream stream is dropped and everything refunded.
    fake_openai.then(StreamPlan(delay=0.05, hang_after=0, hang_limit=25))
    stream = RawStream(server, stream_body(quality="low", partial_images=2, prompt="left early"), headers=bearer(secret), timeout=20)
    try:
        assert_event_stream(stream)
        wait_for(lambda: balance(server, secret) == start - GPT_LOW, 10, "the reservation of the stream in flight")
        # The reservation comes first: leaving before the upstream call begins would (rightly)
        # make none at all, which is not what this part is about.
        wait_for(lambda: len(fake_openai.streams) == 1, 10, "the upstream stream to begin")
    finally:
        stream.close()
    wait_for(lambda: balance(server, secret) == start, 10, "the abandoned stream's reservation to be refunded")
    record = fake_openai.wait_stream_finished(timeout=10)
    assert record.outcome == "client_closed", record.outcome

    # Gone after a partial image: the client has (a preview of) the image, so one image's price
    # is kept, and the upstream stream is dropped.
    fake_openai.then(StreamPlan(delay=0.05, hang_after=1, hang_limit=25))
    stream = RawStream(server, stream_body(quality="low", partial_images=2, prompt="left late"), headers=bearer(secret), timeout=20)
    try:
        assert_event_stream(stream)
        first = next(stream.events())
        assert first.event == "image_generation.partial_image", (first.event, first.data[:120])
        assert balance(server, secret) == start - GPT_LOW, "the generation in flight should hold its reservation"
    finally:
        stream.close()
    record = fake_openai.wait_stream_finished(timeout=10)
    assert record.outcome == "client_closed", (
        f"imgproxy should drop the upstream stream when its client leaves; the upstream stream ended {record.outcome!r}"
    )
    time.sleep(0.5)
    assert balance(server, secret) == start - GPT_LOW, "a partial image delivered is one image paid, exactly once"
