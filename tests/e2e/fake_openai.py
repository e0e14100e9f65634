"""A small fake of OpenAI's image API, for end-to-end tests of imgproxy's OpenAI adapter.

It listens on a free loopback port, records every request it receives (method, path, headers,
raw body, parsed JSON or multipart parts) and answers ``POST .../images/generations`` (JSON) and
``POST .../images/edits`` (multipart/form-data, or JSON) with real PNG images, or with whatever
response a test configured (an error envelope with any status, a Retry-After header, a delay).

Streaming (providers.md §1.4): a generation whose JSON body has ``"stream": true``, or an edit
whose form has a ``stream`` part ``true``, is answered ``text/event-stream`` (chunked): per
image, ``partial_images`` partial events then one completed event, each ``event: X`` +
``data: {json}``, as a :class:`StreamPlan` says (delays, a final ``data: [DONE]``, an error event
mid-stream, or a hang). What happened to each stream is kept in :attr:`FakeOpenAI.streams`.
Only the standard library is used.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import select
import socket
import struct
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

# --------------------------------------------------------------------------------------------
# A tiny PNG encoder (zlib + struct).
# --------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def encode_png(width: int, height: int, pixel: Callable[[int, int], tuple[int, ...]], alpha: bool = False) -> bytes:
    """A valid PNG of ``width`` x ``height``; ``pixel(x, y)`` gives (r, g, b) or (r, g, b, a)."""
    channels = 4 if alpha else 3
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: None
        for x in range(width):
            rows.extend(pixel(x, y)[:channels])
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6 if alpha else 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _png_chunk(b"IEND", b"")
    )


def solid_png(index: int, size: int = 16) -> bytes:
    """A small opaque PNG whose colour (and so whose bytes) depends on ``index``."""
    colour = ((37 * index + 200) % 256, (91 * index + 30) % 256, (53 * index + 120) % 256)
    return encode_png(size, size, lambda x, y: colour if (x + y) % 2 else (255, 255, 255))


# --------------------------------------------------------------------------------------------
# Canned responses.
# --------------------------------------------------------------------------------------------

DEFAULT_USAGE: dict[str, Any] = {
    "input_tokens": 50,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
    "output_tokens": 4160,
    "output_tokens_details": {"image_tokens": 4160, "text_tokens": 0},
    "total_tokens": 4210,
}


@dataclass
class Reply:
    """What the fake answers with. ``body`` is JSON-encoded unless it is bytes."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def error_reply(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
    code: str | None = None,
    param: str | None = None,
    retry_after: int | None = None,
) -> Reply:
    """An OpenAI error envelope with ``status`` (and a Retry-After header if given)."""
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Reply(
        status=status,
        body={"error": {"message": message, "type": type, "param": param, "code": code}},
        headers=headers,
    )


def rate_limited(retry_after: int = 7) -> Reply:
    return error_reply(
        429,
        "Rate limit reached for gpt-image-2 on images per minute. Please try again later.",
        type="requests",
        code="rate_limit_exceeded",
        retry_after=retry_after,
    )


def server_error() -> Reply:
    return error_reply(500, "The server had an error while processing your request.", type="server_error")


def moderation_blocked() -> Reply:
    return error_reply(
        400,
        "Your request was rejected by the safety system. safety_violations=[violence].",
        type="image_generation_user_error",
        code="moderation_blocked",
    )


# --------------------------------------------------------------------------------------------
# What each model takes (OpenAI as of December 2026)
# --------------------------------------------------------------------------------------------

# Shut-down ids: OpenAI answers 404 model_not_found.
RETIRED_MODELS = {"gpt-image-1", "dall-e-2", "dall-e-3"}
# GPT Image 2.6 brought `complexity`, GIF and SVG output (`frame_count`, `frame_duration_ms`,
# `svg`); every other model refuses them.
GPT_IMAGE_2_6 = {"gpt-image-2.6-sunburst", "gpt-image-2.6-flare"}
ONLY_ON_2_6 = ("complexity", "frame_count", "frame_duration_ms", "svg")

# A 1x1 GIF and a small SVG document, what a 2.6 model sends for `gif` / `svg` output.
TINY_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def svg_image(index: int) -> bytes:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
        f'<circle cx="32" cy="32" r="{10 + index % 20}" fill="#336699"/></svg>\n'
    ).encode()


# --------------------------------------------------------------------------------------------
# multipart/form-data
# --------------------------------------------------------------------------------------------


@dataclass
class Part:
    """One part of a multipart/form-data body, its bytes exactly as they were sent."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes
    headers: dict[str, str]  # lower-cased names

    @property
    def is_file(self) -> bool:
        return self.filename is not None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    """``form-data; name="x"; filename="y"`` -> ("form-data", {"name": "x", "filename": "y"})."""
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in re.finditer(r'\s*([A-Za-z0-9_\-*]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)\s*;?', rest):
        key, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[key] = raw
    return head.strip().lower(), params


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """The parts of a multipart/form-data ``body`` (RFC 7578), strictly: the boundary from
    ``content_type``, CRLF line breaks, a closing delimiter. Raises ValueError if malformed."""
    kind, params = _header_params(content_type)
    if kind != "multipart/form-data":
        raise ValueError(f"Content-Type is {content_type!r}, not multipart/form-data")
    boundary = params.get("boundary")
    if not boundary:
        raise ValueError(f"no boundary in {content_type!r}")
    delimiter = b"--" + boundary.encode("latin-1")
    if not body.startswith(delimiter):
        start = body.find(b"\r\n" + delimiter)
        if start < 0:
            raise ValueError("the body does not contain the boundary")
        body = body[start + 2 :]  # a preamble is allowed and ignored
    parts: list[Part] = []
    pos = len(delimiter)
    while True:
        if body[pos : pos + 2] == b"--":
            return parts  # the closing delimiter (an epilogue after it is ignored)
        if body[pos : pos + 2] != b"\r\n":
            raise ValueError(f"no CRLF after a boundary at byte {pos}")
        pos += 2
        end = body.find(b"\r\n" + delimiter, pos)
        if end < 0:
            raise ValueError("a part is not closed by a boundary (no closing delimiter)")
        chunk = body[pos:end]
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"a part's headers are not followed by a blank line: {chunk[:200]!r}")
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            if not line:
                continue
            name, colon, value = line.decode("utf-8", "replace").partition(":")
            if not colon:
                raise ValueError(f"bad part header line {line!r}")
            headers[name.strip().lower()] = value.strip()
        disposition, dparams = _header_params(headers.get("content-disposition", ""))
        if disposition != "form-data" or "name" not in dparams:
            raise ValueError(f"part without `Content-Disposition: form-data; name=...`: {headers}")
        parts.append(
            Part(
                name=dparams["name"],
                filename=dparams.get("filename"),
                content_type=headers.get("content-type"),
                data=data,
                headers=headers,
            )
        )
        pos = end + 2 + len(delimiter)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def is_multipart(self) -> bool:
        return self.headers.get("content-type", "").lower().startswith("multipart/form-data")

    @functools.cached_property
    def parts(self) -> list[Part]:
        """Every part of a multipart/form-data body, in order (ValueError if it is not one)."""
        return parse_multipart(self.headers.get("content-type", ""), self.body)

    def parts_named(self, name: str) -> list[Part]:
        return [part for part in self.parts if part.name == name]

    def part(self, name: str) -> Part:
        """The one part called ``name`` (AssertionError if there is none or several)."""
        found = self.parts_named(name)
        assert len(found) == 1, f"expected one `{name}` part, got {len(found)}: {self.part_summary()}"
        return found[0]

    @property
    def form(self) -> dict[str, str]:
        """The text (non-file) parts as {name: value}; a repeated name keeps its last value."""
        return {part.name: part.text for part in self.parts if not part.is_file}

    @property
    def files(self) -> list[Part]:
        """The file parts (those with a filename), in order."""
        return [part for part in self.parts if part.is_file]

    def part_summary(self) -> list[str]:
        return [
            f"{p.name}" + (f" (file {p.filename!r}, {p.content_type}, {len(p.data)} bytes)" if p.is_file else f"={p.data[:60]!r}")
            for p in self.parts
        ]

    def field(self, name: str) -> Any:
        """A request field: the JSON body's value, or the form's text part (a string)."""
        if self.is_multipart:
            return self.form.get(name)
        try:
            body = self.json
        except ValueError:
            return None
        return body.get(name) if isinstance(body, dict) else None

    @property
    def wants_stream(self) -> bool:
        """``"stream": true`` in a JSON body, or a ``stream`` text part ``true``."""
        value = self.field("stream")
        return value is True or (isinstance(value, str) and value.strip().lower() == "true")


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------

STREAM_ERROR: dict[str, Any] = {
    "message": "The server had an error while processing your request.",
    "type": "server_error",
    "param": None,
    "code": "server_error",
}


@dataclass
class StreamPlan:
    """How the fake answers a streaming request.

    ``delay`` seconds pass before every event (``first_delay``, if given, before the first one
    instead); ``head_delay`` before the response headers (``None``: the fake's
    :meth:`FakeOpenAI.delay_images`). ``partials`` overrides the number of partial events per
    image (default: the request's ``partial_images``). ``done`` ends the stream with
    ``data: [DONE]``. ``fail_after=k`` sends ``k`` events, then ``event: error`` with
    ``data: {"error": error}`` and ends the stream. ``hang_after=k`` sends ``k`` events, then
    sends nothing more until the client goes away (or ``hang_limit`` seconds, or the fake
    stops), and drops the connection without ending the stream."""

    delay: float = 0.0
    first_delay: float | None = None
    head_delay: float | None = None
    partials: int | None = None
    done: bool = False
    fail_after: int | None = None
    error: dict[str, Any] = field(default_factory=lambda: dict(STREAM_ERROR))
    hang_after: int | None = None
    hang_limit: float = 30.0


@dataclass
class StreamRecord:
    """What one streaming response did: the events written (``(event name, data)``), and how it
    ended: ``"completed"``, ``"failed"`` (error event sent), ``"hung"`` (hang_limit reached),
    ``"client_closed"`` (the client went away first) or ``"stopped"`` (the fake stopped)."""

    request: RecordedRequest
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    outcome: str = "running"
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def types(self) -> list[str]:
        return [name for name, _ in self.events]


def partial_png(index: int) -> bytes:
    """A small PNG for partial image ``index``: 12x12, so it never equals a final image (16x16)."""
    return solid_png(index, size=12)


def _edit_path(path: str) -> bool:
    return path.split("?")[0].endswith("/images/edits")


def _generation_path(path: str) -> bool:
    return path.split("?")[0].endswith("/images/generations")


class FakeOpenAI:
    """A threaded fake OpenAI upstream.

    By default ``POST */images/generations`` (JSON) and ``POST */images/edits`` (multipart, or
    JSON) answer 200 with ``n`` distinct PNGs (as ``b64_json``, ``n`` taken from the request
    body or form; an SVG document or a GIF for ``output_format`` svg / gif) and
    :data:`DEFAULT_USAGE`. Like OpenAI, it refuses what a model does not take (see
    :meth:`_refusal`: retired ids, GPT Image 2.6's fields on other models, 2.6's GIF/SVG rules),
    noting each refusal in :attr:`problems`; a streaming request (``stream`` true) is answered
    as an event stream (:class:`StreamPlan`). Tests change that with :meth:`always` (every later
    request) or :meth:`then` (queued, one request each): a queued :class:`Reply` answers any
    request (a streaming one too, as an upstream failing before the stream starts); a queued
    :class:`StreamPlan` is used by the next request, and plans the stream if it is one.
    :meth:`stream_plan` sets the plan of every later stream.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.images: list[bytes] = []  # every final image the fake has sent, in order
        self.partial_images: list[bytes] = []  # every partial image sent in a stream, in order
        self.streams: list[StreamRecord] = []  # every streaming response, in order
        self.problems: list[str] = []  # malformed requests (e.g. an unparsable form)
        self.usage: dict[str, Any] = dict(DEFAULT_USAGE)
        self.rejected_keys: set[str] = set()  # keys answered 401 `invalid_api_key`
        self._lock = threading.Lock()
        self._queued: deque[Reply | StreamPlan] = deque()
        self._always: Reply | None = None
        self._plan = StreamPlan()
        self._delay = 0.0
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (append ``/v1`` for an OPENAI_BASE_URL)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- configuration --------------------------------------------------------------------

    def always(self, reply: Reply | None) -> None:
        """Answer every later request with ``reply`` (``None``: back to generated images)."""
        with self._lock:
            self._always = reply

    def then(self, *replies: Reply | StreamPlan) -> None:
        """Answer the next requests with ``replies``, one each, before the default."""
        with self._lock:
            self._queued.extend(replies)

    def reject_key(self, key: str) -> None:
        """Answer every request sent with ``key`` 401 ``invalid_api_key``, as OpenAI answers a
        revoked key (before any queued or default reply)."""
        with self._lock:
            self.rejected_keys.add(key)

    def delay_images(self, seconds: float) -> None:
        """Wait ``seconds`` before answering generated-image replies (and before the headers of
        a stream whose plan sets no ``head_delay``)."""
        self._delay = seconds

    def stream_plan(self, plan: StreamPlan | None = None, **fields: Any) -> StreamPlan:
        """Plan every later stream: ``stream_plan(StreamPlan(...))`` or
        ``stream_plan(delay=0.5, fail_after=1)``; no arguments: back to the default."""
        plan = plan or StreamPlan(**fields)
        with self._lock:
            self._plan = plan
        return plan

    # -- what was received ----------------------------------------------------------------

    def image_requests(self) -> list[RecordedRequest]:
        """The generation requests (``POST */images/generations``), in order."""
        with self._lock:
            return [r for r in self.requests if _generation_path(r.path)]

    def edit_requests(self) -> list[RecordedRequest]:
        """The edit requests (``POST */images/edits``), in order."""
        with self._lock:
            return [r for r in self.requests if _edit_path(r.path)]

    def wait_stream_finished(self, index: int = -1, timeout: float = 10.0) -> StreamRecord:
        """Stream ``index`` (default: the latest) once it has ended; AssertionError if it has
        not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                record = self.streams[index] if -len(self.streams) <= index < len(self.streams) else None
            if record is not None and record.finished.is_set():
                return record
            if time.monotonic() > deadline:
                with self._lock:
                    seen = [(s.outcome, s.types) for s in self.streams]
                raise AssertionError(f"stream {index} did not end within {timeout}s; streams: {seen}")
            time.sleep(0.02)

    # -- serving --------------------------------------------------------------------------

    def _refusal(self, request: RecordedRequest) -> Reply | None:
        """OpenAI's answer to a request its model does not take, or None (noted in
        :attr:`problems` too): a retired id is a 404, a 2.6-only field on another model a 400
        ``unknown_parameter``, and GPT Image 2.6's GIF/SVG rules are 400s naming the field."""

        def refuse(reply: Reply, why: str) -> Reply:
            with self._lock:
                self.problems.append(f"{request.path}: {why}")
            return reply

        model = request.field("model")
        if not isinstance(model, str):
            return None
        if model in RETIRED_MODELS:
            return refuse(
                error_reply(
                    404,
                    f"The model `{model}` does not exist or you do not have access to it.",
                    code="model_not_found",
                ),
                f"model {model} has been shut down",
            )
        if not model.startswith(("gpt-image", "chatgpt-image")):
            return None
        output_format = request.field("output_format")
        if not any(model == m or model.startswith(f"{m}-20") for m in GPT_IMAGE_2_6):
            for name in ONLY_ON_2_6:
                if request.field(name) is not None:
                    return refuse(
                        error_reply(400, f"Unknown parameter: '{name}'.", code="unknown_parameter", param=name),
                        f"{model} does not take `{name}`",
                    )
            if output_format in ("gif", "svg"):
                return refuse(
                    error_reply(
                        400,
                        f"Invalid value: '{output_format}'. Supported values are: 'png', 'jpeg', and 'webp'.",
                        code="invalid_value",
                        param="output_format",
                    ),
                    f"{model} does not make {output_format}",
                )
            return None
        svg = request.field("svg")
        if output_format == "svg":
            if not (isinstance(svg, dict) and isinstance(svg.get("model"), str) and svg["model"]):
                return refuse(
                    error_reply(400, "Missing required parameter: 'svg.model'.", code="missing_required_parameter", param="svg.model"),
                    "svg output without svg.model",
                )
            if self._request_n(request) != 1:
                return refuse(error_reply(400, "SVG output supports n=1 only.", code="invalid_value", param="n"), "svg with n > 1")
        elif svg is not None:
            return refuse(
                error_reply(400, "'svg' requires output_format 'svg'.", code="invalid_value", param="svg"), "svg without svg output"
            )
        if output_format != "gif":
            for name in ("frame_count", "frame_duration_ms"):
                if request.field(name) is not None:
                    return refuse(
                        error_reply(400, f"'{name}' requires output_format 'gif'.", code="invalid_value", param=name),
                        f"{name} without gif output",
                    )
        else:
            for name in ("partial_images", "mask", "output_compression"):
                present = request.field(name) is not None or (request.is_multipart and bool(request.parts_named(name)))
                if present:
                    return refuse(
                        error_reply(400, f"'{name}' is not supported with output_format 'gif'.", code="invalid_value", param=name),
                        f"{name} with gif output",
                    )
            duration = request.field("frame_duration_ms")
            if duration is not None and not 20 <= int(duration) <= 655350:
                return refuse(
                    error_reply(
                        400, "frame_duration_ms must be between 20 and 655350.", code="invalid_value", param="frame_duration_ms"
                    ),
                    f"frame_duration_ms {duration}",
                )
        if output_format in ("gif", "svg") and request.wants_stream:
            return refuse(
                error_reply(
                    400, f"Streaming is not supported with output_format '{output_format}'.", code="invalid_value", param="stream"
                ),
                f"stream with {output_format} output",
            )
        return None

    def _request_n(self, request: RecordedRequest) -> int:
        value = request.field("n")
        return int(value) if value not in (None, "") else 1

    def _next_reply(self, request: RecordedRequest) -> Reply | StreamPlan:
        with self._lock:
            if request.headers.get("authorization", "").removeprefix("Bearer ") in self.rejected_keys:
                return error_reply(401, "Incorrect API key provided.", code="invalid_api_key")
            if self._queued:
                queued = self._queued.popleft()
                if isinstance(queued, Reply):
                    return queued
                plan: StreamPlan | None = queued
            elif self._always is not None:
                return self._always
            else:
                plan = None
        is_edit = _edit_path(request.path)
        if request.method != "POST" or not (is_edit or _generation_path(request.path)):
            return error_reply(404, f"Invalid URL ({request.method} {request.path})")
        if request.is_multipart:
            try:
                request.parts
            except ValueError as error:
                with self._lock:
                    self.problems.append(f"{request.path}: unparsable multipart body: {error}")
                return error_reply(400, f"Could not parse the multipart form: {error}")
            if not is_edit:
                return error_reply(400, "Expected a JSON body for /images/generations.")
        else:
            try:
                body = request.json
            except ValueError:
                return error_reply(400, "We could not parse the JSON body of your request.")
            if not isinstance(body, dict):
                return error_reply(400, "The JSON body must be an object.")
        try:
            n = self._request_n(request)
        except (TypeError, ValueError):
            return error_reply(400, f"Invalid value for n: {request.field('n')!r}.", param="n")
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if request.wants_stream:
            with self._lock:
                return plan or self._plan
        output_format = request.field("output_format")
        images = []
        with self._lock:
            for _ in range(n):
                if output_format == "svg":
                    png = svg_image(len(self.images))
                elif output_format == "gif":
                    png = TINY_GIF
                else:
                    png = solid_png(len(self.images))
                self.images.append(png)
                images.append(png)
        return Reply(
            status=200,
            body={
                "created": int(time.time()),
                "background": "opaque",
                "data": [{"b64_json": base64.b64encode(png).decode()} for png in images],
                "output_format": output_format if output_format in ("gif", "svg") else "png",
                "quality": "medium",
                "size": "1024x1024",
                "usage": self.usage,
            },
            delay=self._delay,
        )

    def _stream_events(self, request: RecordedRequest, plan: StreamPlan) -> Iterator[tuple[str, dict[str, Any]]]:
        """The events of a stream, each image made as it is sent."""
        kind = "image_edit" if _edit_path(request.path) else "image_generation"
        n = self._request_n(request)
        partials = plan.partials
        if partials is None:
            value = request.field("partial_images")
            partials = int(value) if value not in (None, "") else 0
        common = {"size": "1024x1024", "quality": "medium", "background": "opaque", "output_format": "png"}

        def event(name: str, png: bytes, **last: Any) -> tuple[str, dict[str, Any]]:
            event_type = f"{kind}.{name}"
            body = {"type": event_type, "b64_json": base64.b64encode(png).decode(), "created_at": int(time.time())}
            return event_type, {**body, **common, **last}

        for _ in range(n):
            for index in range(partials):
                with self._lock:
                    png = partial_png(len(self.partial_images))
                    self.partial_images.append(png)
                yield event("partial_image", png, partial_image_index=index)
            with self._lock:
                png = solid_png(len(self.images))
                self.images.append(png)
            yield event("completed", png, usage=self.usage)

    def _peer_closed(self, sock: socket.socket, seconds: float) -> bool:
        """Waits up to ``seconds``; True as soon as the client has closed the connection (or the
        fake is stopping)."""
        deadline = time.monotonic() + seconds
        while True:
            if self._stopping.is_set():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([sock], [], [], min(left, 0.05))
            if readable:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except OSError:
                    return True
                time.sleep(min(left, 0.05))  # unexpected bytes from the client: ignore them

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep pytest output clean

            def _read_body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    body = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return bytes(body)
                        body.extend(self.rfile.read(size))
                        self.rfile.readline()  # the CRLF after the chunk
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _serve(self) -> None:
                body = self._read_body()
                recorded = RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with fake._lock:
                    fake.requests.append(recorded)
                reply = fake._next_reply(recorded)
                if isinstance(reply, StreamPlan):
                    self._stream(recorded, reply)
                    return
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("x-request-id", "req_fake_0123456789")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _stream(self, request: RecordedRequest, plan: StreamPlan) -> None:
                record = StreamRecord(request=request)
                with fake._lock:
                    fake.streams.append(record)
                self.close_connection = True
                sock = self.connection
                try:
                    head_delay = fake._delay if plan.head_delay is None else plan.head_delay
                    if head_delay and fake._peer_closed(sock, head_delay):
                        record.outcome = "stopped" if fake._stopping.is_set() else "client_closed"
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                    self.send_header("Cache-Control", "no-cache")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("x-request-id", "req_fake_stream_0123456789")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.flush()
                    events = fake._stream_events(request, plan)
                    sent = 0
                    while True:
                        if plan.fail_after is not None and sent >= plan.fail_after:
                            self._chunk(b"event: error\ndata: " + json.dumps({"error": plan.error}).encode() + b"\n\n")
                            self._chunk(b"")
                            record.outcome = "failed"
                            return
                        if plan.hang_after is not None and sent >= plan.hang_after:
                            break
                        wait = plan.first_delay if (sent == 0 and plan.first_delay is not None) else plan.delay
                        if wait and fake._peer_closed(sock, wait):
                            record.outcome = "stopped" if fake._stopping.is_set() else "client_closed"
                            return
                        try:
                            name, data = next(events)
                        except StopIteration:
                            if plan.done:
                                self._chunk(b"data: [DONE]\n\n")
                            self._chunk(b"")
                            record.outcome = "completed"
                            return
                        self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                        record.events.append((name, data))
                        sent += 1
                    # hang: nothing more until the client leaves, then drop the connection
                    if fake._peer_closed(sock, plan.hang_limit):
                        record.outcome = "stopped" if fake._stopping.is_set() else "client_closed"
                    else:
                        record.outcome = "hung"
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                    record.outcome = "client_closed"
                finally:
                    record.finished.set()

            do_POST = _serve
            do_GET = _serve
            do_PUT = _serve
            do_DELETE = _serve

        return Handler


if __name__ == "__main__":  # a manual check: python tests/e2e/fake_openai.py
    with FakeOpenAI() as fake:
        print(f"fake OpenAI at {fake.url}/v1; Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
