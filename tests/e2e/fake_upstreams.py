"""Fakes of the non-OpenAI image upstreams, for end-to-end tests of imgproxy's provider adapters.

One threaded standard-library HTTP fake per provider, each built from the wire format in
shared/reference/providers.md (§2 Gemini, §4 Replicate, §5 xAI, §6 Black Forest Labs, §7 fal
queue API, §8 Together) and providers-2.md (§8 DashScope, §11 Stability, §12 Ideogram), each
*checking* what it receives: the path, the auth header with the expected key, the body's
required shape. A request that breaks the documented format gets
the provider's own error envelope and is noted in ``fake.problems`` (tests assert that list is
empty, so a wrong request is reported precisely rather than as a vague 502). They also answer
as the real APIs do in December 2026: 404 for model ids their providers have shut down
(Gemini's preview and 2.5 image ids, Replicate's ``google/imagen-4`` and ``google/nano-banana``,
xAI's ``grok-imagine-image-quality``) and 400/422 for fields the model refuses (Gemini's
``personGeneration``, BFL's ``safety_tolerance`` > 2 with input images), each noted as a problem.

Every fake records every request (:class:`Recorded`: listener, method, path, query, headers,
body) and answers with real PNG bytes (an SVG document for recraft-v3-svg). The asynchronous
upstreams run their real flows: Replicate create (``starting``) → poll ``urls.get``
(``processing``) → ``succeeded`` with output URLs served by the fake; BFL submit → poll the
returned ``polling_url`` (on a *second* port, so rebuilding the host is noticed) ``Pending`` →
``Ready`` → sample download; fal submit (``IN_QUEUE``) → poll ``status_url`` (``IN_QUEUE``,
``IN_PROGRESS``, answered 202) → ``COMPLETED`` → ``response_url`` → image download.

:class:`FakeFiles` is a static file server for reference images: PNGs, an HTML page, oversized
bodies (with and without Content-Length) and redirects, optionally on ``::1``.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fake_openai import RecordedRequest, encode_png, solid_png

# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def noise_png(size: int, seed: int = 1) -> bytes:
    """A valid RGB PNG of random pixels: it does not compress, so it is about 3 * size² bytes."""
    rng = random.Random(seed)
    pixels = [bytes(rng.getrandbits(8) for _ in range(3 * size)) for _ in range(size)]
    return encode_png(size, size, lambda x, y: tuple(pixels[y][3 * x : 3 * x + 3]))


def svg_document(index: int) -> bytes:
    colour = f"#{(37 * index + 200) % 256:02x}{(91 * index + 30) % 256:02x}{(53 * index + 120) % 256:02x}"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<svg xmlns="http://www.w3.org/2000/svg" width="1024" height="1024" viewBox="0 0 1024 1024">'
        f'<rect width="1024" height="1024" fill="#ffffff"/><circle cx="512" cy="512" r="{300 + index}" fill="{colour}"/>'
        "</svg>\n"
    ).encode()


def is_svg(data: bytes) -> bool:
    return data.startswith((b"<?xml", b"<svg"))


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def decode_data_url(url: str) -> tuple[str, bytes]:
    """(mime, bytes) of a base64 ``data:`` URL; AssertionError if it is not one."""
    match = re.fullmatch(r"data:([^;,]+);base64,(.*)", url, re.S)
    assert match, f"not a base64 data URL: {url[:80]!r}"
    return match.group(1), base64.b64decode(match.group(2), validate=True)


# --------------------------------------------------------------------------------------------
# A threaded fake with one or more listeners
# --------------------------------------------------------------------------------------------


@dataclass
class Recorded(RecordedRequest):
    """A request a fake upstream got on ``listener``; its ``path`` is without the query string."""

    listener: str
    query: dict[str, list[str]]

    @property
    def target(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Response:
    """What a fake answers. ``body``: bytes as is, str as UTF-8, anything else as JSON."""

    status: int = 200
    body: Any = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # Transfer-Encoding: chunked, no Content-Length

    def payload(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.content_type or "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), self.content_type or "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), self.content_type or "application/json"


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class FakeServer:
    """Base of every fake: ``route(request) -> Response`` runs on the server threads; every
    request is recorded first. ``listeners`` names the ports the fake listens on (most fakes
    have one, ``"main"``)."""

    listeners: tuple[str, ...] = ("main",)

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[Recorded] = []
        self.problems: list[str] = []
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self._images = itertools.count(0)
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._threads: list[threading.Thread] = []
        server_class = _V6Server if ":" in host else ThreadingHTTPServer
        for name in self.listeners:
            server = server_class((host, 0), self._handler_class(name))
            server.daemon_threads = True
            self._servers[name] = server
            self._threads.append(
                threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name=f"{type(self).__name__}-{name}",
                    daemon=True,
                )
            )

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> "FakeServer":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def port_of(self, listener: str = "main") -> int:
        return self._servers[listener].server_address[1]

    def url_of(self, listener: str = "main") -> str:
        host = self._servers[listener].server_address[0]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port_of(listener)}"

    @property
    def port(self) -> int:
        return self.port_of(self.listeners[0])

    @property
    def url(self) -> str:
        return self.url_of(self.listeners[0])

    # -- helpers for subclasses and tests --------------------------------------------------

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):04d}"

    def new_png(self) -> bytes:
        return solid_png(100 + next(self._images))

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def calls(self, method: str | None = None, path: str | None = None, *, prefix: str | None = None) -> list[Recorded]:
        """Recorded requests, filtered by method and exact path or path prefix."""
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method)
                and (path is None or r.path == path)
                and (prefix is None or r.path.startswith(prefix))
            ]

    def summary(self) -> list[str]:
        with self.lock:
            return [f"{r.listener}: {r.target}" for r in self.requests]

    def route(self, request: Recorded) -> Response:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- serving ----------------------------------------------------------------------------

    def _handler_class(self, listener: str) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urllib.parse.urlsplit(self.path)
                recorded = Recorded(
                    listener=listener,
                    method=self.command,
                    path=parts.path,
                    query=urllib.parse.parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with fake.lock:
                    fake.requests.append(recorded)
                try:
                    reply = fake.route(recorded)
                except Exception as error:  # noqa: BLE001 - a fake bug must show, not hang
                    fake.problem(f"fake crashed on {recorded.target}: {error!r}")
                    reply = Response(500, {"error": f"fake crashed: {error!r}"})
                payload, content_type = reply.payload()
                self.send_response(reply.status)
                self.send_header("Content-Type", content_type)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(payload), 4096):
                        chunk = payload[start : start + 4096]
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)

            do_GET = _serve
            do_POST = _serve
            do_PUT = _serve
            do_DELETE = _serve
            do_HEAD = _serve

        return Handler


def _json_body(fake: FakeServer, request: Recorded, who: str) -> tuple[dict[str, Any] | None, str | None]:
    """The request's JSON object, or (None, why not) after noting the problem."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        why = f"{who}: {request.target} has Content-Type {content_type!r}, expected application/json"
        fake.problem(why)
        return None, why
    try:
        body = json.loads(request.body)
    except ValueError:
        why = f"{who}: {request.target} body is not JSON: {request.body[:200]!r}"
        fake.problem(why)
        return None, why
    if not isinstance(body, dict):
        why = f"{who}: {request.target} body is not a JSON object"
        fake.problem(why)
        return None, why
    return body, None


# --------------------------------------------------------------------------------------------
# §2 Gemini generateContent
# --------------------------------------------------------------------------------------------


def google_error(status: int, rpc_status: str, message: str) -> Response:
    return Response(status, {"error": {"code": status, "message": message, "status": rpc_status}})


# Gemini image model ids Google has shut down (ai.google.dev/gemini-api/docs/deprecations):
# generateContent on them answers 404 NOT_FOUND, as the real API does.
GEMINI_SHUT_DOWN = {
    "gemini-2.5-flash-image",
    "gemini-2.5-flash-image-preview",
    "gemini-3-pro-image-preview",
    "gemini-3.1-flash-image-preview",
    "imagen-4.0-generate-001",
}
# The live image models and the `imageConfig.imageSize` values each takes.
GEMINI_IMAGE_SIZES = {
    "gemini-3-pro-image": {"1K", "2K", "4K"},
    "gemini-3.1-flash-image": {"512", "1K", "2K", "4K"},
}


class FakeGemini(FakeServer):
    """``POST /v1beta/models/{model}:generateContent`` with ``x-goog-api-key``.

    Each success answers one candidate whose parts are a text part, an interim *thought* image
    (``thought: true``, which must be skipped) and the final image; :attr:`final_images` and
    :attr:`thought_images` keep them in order.

    Like the Gemini Developer API today: a shut-down model id (:data:`GEMINI_SHUT_DOWN`) is a
    404 ``NOT_FOUND``, and ``generationConfig.imageConfig.personGeneration`` (Vertex only) a 400
    ``INVALID_ARGUMENT``; both are also noted in :attr:`problems`."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.final_images: list[bytes] = []
        self.thought_images: list[bytes] = []

    def generate_calls(self) -> list[Recorded]:
        return [r for r in self.calls("POST") if r.path.endswith(":generateContent")]

    def route(self, request: Recorded) -> Response:
        match = re.fullmatch(r"/v1beta/models/([^/:]+):generateContent", request.path)
        if request.method != "POST" or not match:
            self.problem(f"gemini: unexpected {request.target}")
            return google_error(404, "NOT_FOUND", f"Requested entity was not found: {request.path}")
        if request.headers.get("x-goog-api-key") != self.key and request.query.get("key") != [self.key]:
            self.problem(f"gemini: {request.target} without x-goog-api-key of the configured key")
            return google_error(
                403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without established identity)."
            )
        model = match.group(1)
        if model in GEMINI_SHUT_DOWN:
            self.problem(f"gemini: {request.target} calls `{model}`, which Google has shut down")
            return google_error(
                404,
                "NOT_FOUND",
                f"models/{model} is not found for API version v1beta, or is not supported for generateContent. "
                "Call ListModels to see the list of available models and their supported methods.",
            )
        body, why = _json_body(self, request, "gemini")
        if body is None:
            return google_error(400, "INVALID_ARGUMENT", why or "bad body")
        config = body.get("generationConfig") or {}
        image_config = (config.get("imageConfig") or config.get("image_config") or {}) if isinstance(config, dict) else {}
        for name in ("personGeneration", "person_generation"):
            if name in image_config:
                self.problem(f"gemini: imageConfig.{name} sent (the Gemini Developer API refuses it; Vertex only)")
                return google_error(400, "INVALID_ARGUMENT", "personGeneration parameter is not supported in Gemini API.")
        size = image_config.get("imageSize", image_config.get("image_size"))
        if size is not None and model in GEMINI_IMAGE_SIZES and size not in GEMINI_IMAGE_SIZES[model]:
            self.problem(f"gemini: imageConfig.imageSize {size!r} is not one of {sorted(GEMINI_IMAGE_SIZES[model])} for {model}")
            return google_error(400, "INVALID_ARGUMENT", f"Unsupported image size: {size}")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents or not all(isinstance(c, dict) for c in contents):
            self.problem(f"gemini: contents missing or not a list of objects: {body.get('contents')!r}")
            return google_error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified")
        for content in contents:
            parts = content.get("parts")
            if not isinstance(parts, list) or not parts:
                self.problem(f"gemini: a content has no parts: {content!r}")
                return google_error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents.parts: must not be empty")
            for part in parts:
                inline = part.get("inlineData") or part.get("inline_data") if isinstance(part, dict) else None
                if not (isinstance(part, dict) and (isinstance(part.get("text"), str) or isinstance(inline, dict))):
                    self.problem(f"gemini: a part is neither text nor inlineData: {str(part)[:200]}")
                    return google_error(400, "INVALID_ARGUMENT", "Invalid part")
                if inline is not None:
                    data = inline.get("data")
                    mime = inline.get("mimeType") or inline.get("mime_type")
                    try:
                        base64.b64decode(data or "", validate=True)
                    except ValueError:
                        data = None
                    if not data or not isinstance(mime, str) or not mime.startswith("image/"):
                        self.problem(f"gemini: bad inlineData part: mimeType={mime!r}, data={str(data)[:60]!r}")
                        return google_error(400, "INVALID_ARGUMENT", "Invalid inline data")
        config = body.get("generationConfig") or {}
        candidate_count = config.get("candidateCount", 1)
        if candidate_count != 1:
            self.problem(f"gemini: candidateCount {candidate_count!r}")
            return google_error(
                400, "INVALID_ARGUMENT", f"Multiple candidates is not enabled for models/{match.group(1)}"
            )
        modalities = config.get("responseModalities")
        if not isinstance(modalities, list) or "IMAGE" not in modalities:
            self.problem(f"gemini: responseModalities {modalities!r} does not ask for IMAGE")
            return Response(
                200,
                {
                    "candidates": [
                        {"content": {"role": "model", "parts": [{"text": "I can only answer in text."}]}, "finishReason": "STOP", "index": 0}
                    ]
                },
            )
        thought, final = self.new_png(), self.new_png()
        with self.lock:
            self.thought_images.append(thought)
            self.final_images.append(final)
        return Response(
            200,
            {
                "candidates": [
                    {
                        "content": {
                            "role": "model",
                            "parts": [
                                {"text": "Drafting the composition.", "thought": True},
                                {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(thought).decode()}, "thought": True},
                                {"text": "Here is your image."},
                                {
                                    "inlineData": {"mimeType": "image/png", "data": base64.b64encode(final).decode()},
                                    "thoughtSignature": "c2lnbmF0dXJl",
                                },
                            ],
                        },
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": 10,
                    "candidatesTokenCount": 1290,
                    "totalTokenCount": 1300,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}],
                    "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}],
                },
                "modelVersion": match.group(1),
                "responseId": self.next_id("resp"),
            },
        )


# --------------------------------------------------------------------------------------------
# §4 Replicate
# --------------------------------------------------------------------------------------------

# Models whose output is an array of URIs (the others give one URI string).
REPLICATE_ARRAY_OUTPUT = {"bytedance/seedream-4", "bytedance/seedream-4.5"}
REPLICATE_SVG_OUTPUT = {"recraft-ai/recraft-v3-svg"}
# Models whose Google backends were shut down: Replicate answers 404 for them.
REPLICATE_SHUT_DOWN = {"google/imagen-4", "google/nano-banana"}
# Google's live models on Replicate: one URI string per prediction; their input fields.
REPLICATE_GOOGLE = {"google/nano-banana-2", "google/nano-banana-pro"}
REPLICATE_GOOGLE_INPUT = {"prompt", "image_input", "aspect_ratio", "resolution", "output_format", "safety_filter_level"}


def replicate_problem(status: int, title: str, detail: str) -> Response:
    return Response(status, {"title": title, "status": status, "detail": detail}, content_type="application/problem+json")


@dataclass
class _Prediction:
    id: str
    model: str
    input: dict[str, Any]
    polls_left: int
    status: str = "starting"
    files: list[tuple[str, bytes, str]] = field(default_factory=list)  # (path, bytes, mime)


class FakeReplicate(FakeServer):
    """``POST /v1/models/{owner}/{name}/predictions`` (Bearer, ``Prefer: wait``) answers 201
    with a ``starting`` prediction; ``GET urls.get`` answers ``processing`` ``processing_polls``
    times, then ``succeeded`` with output URL(s) on this fake (``/delivery/...``), which serve
    PNG (or SVG for recraft-v3-svg). ``POST urls.cancel`` cancels.

    The shut-down ``google/imagen-4`` and ``google/nano-banana`` answer 404 (and are noted in
    :attr:`problems`); ``google/nano-banana-2`` / ``-pro`` give one URI string and have their
    inputs checked. Seedream's ``max_images`` is a cap, not a promise: with ``images_cap`` set,
    a prediction makes at most that many images. ``poll_delays`` holds seconds to wait before
    answering each of the next polls (a hanging ``urls.get``), one per poll, in order."""

    def __init__(self, token: str, processing_polls: int = 1, images_cap: int | None = None) -> None:
        super().__init__()
        self.token = token
        self.processing_polls = processing_polls
        self.images_cap = images_cap
        self.predictions: dict[str, _Prediction] = {}
        self.outputs: list[bytes] = []  # every output file, in creation order
        self.poll_delays: list[float] = []

    def create_calls(self) -> list[Recorded]:
        return [r for r in self.calls("POST", prefix="/v1/models/") if r.path.endswith("/predictions")]

    def poll_calls(self) -> list[Recorded]:
        return [r for r in self.calls("GET", prefix="/v1/predictions/")]

    def download_calls(self) -> list[Recorded]:
        return self.calls("GET", prefix="/delivery/")

    def _prediction_json(self, p: _Prediction) -> dict[str, Any]:
        api = f"{self.url}/v1/predictions/{p.id}"
        output: Any = None
        if p.status == "succeeded":
            urls = [f"{self.url}{path}" for path, _, _ in p.files]
            output = urls if p.model in REPLICATE_ARRAY_OUTPUT else urls[0]
        return {
            "id": p.id,
            "model": p.model,
            "version": "hidden",
            "input": p.input,
            "logs": "" if p.status == "starting" else "Generating...\n",
            "output": output,
            "data_removed": False,
            "error": None,
            "status": p.status,
            "created_at": "2026-01-01T00:00:00.000Z",
            "urls": {
                "cancel": f"{api}/cancel",
                "get": api,
                "stream": f"{self.url}/stream/{p.id}",
                "web": f"https://replicate.com/p/{p.id}",
            },
            **({"metrics": {"predict_time": 1.2, "total_time": 1.4}, "completed_at": "2026-01-01T00:00:02.000Z"} if p.status == "succeeded" else {}),
        }

    def _authorized(self, request: Recorded) -> bool:
        if request.headers.get("authorization") in (f"Bearer {self.token}", f"Token {self.token}"):
            return True
        self.problem(f"replicate: {request.target} without `Authorization: Bearer <token>` (got {request.headers.get('authorization')!r})")
        return False

    def route(self, request: Recorded) -> Response:
        path = request.path
        create = re.fullmatch(r"/v1/models/([^/]+)/([^/]+)/predictions", path)
        poll = re.fullmatch(r"/v1/predictions/([^/]+)", path)
        cancel = re.fullmatch(r"/v1/predictions/([^/]+)/cancel", path)
        if request.method == "GET" and path.startswith("/delivery/"):
            with self.lock:
                for p in self.predictions.values():
                    for file_path, data, mime in p.files:
                        if file_path == path:
                            return Response(200, data, content_type=mime)
            return Response(404, "Not found")
        if request.method == "POST" and create:
            if not self._authorized(request):
                return replicate_problem(401, "Unauthenticated", "You did not pass a valid authentication token")
            if not request.headers.get("prefer", "").startswith("wait"):
                self.problem(f"replicate: create without `Prefer: wait` (got {request.headers.get('prefer')!r})")
            body, why = _json_body(self, request, "replicate")
            if body is None:
                return replicate_problem(400, "Bad request", why or "bad body")
            model_input = body.get("input")
            if not isinstance(model_input, dict):
                self.problem(f"replicate: create body has no `input` object: {str(body)[:300]}")
                return replicate_problem(422, "Input validation failed", "- input: input is required")
            if not isinstance(model_input.get("prompt"), str) or not model_input["prompt"]:
                self.problem(f"replicate: input.prompt missing: {str(model_input)[:300]}")
                return replicate_problem(422, "Input validation failed", "- input: prompt is required")
            model = f"{create.group(1)}/{create.group(2)}"
            if model in REPLICATE_SHUT_DOWN:
                self.problem(f"replicate: {request.target} calls `{model}`, whose backend has been shut down")
                return replicate_problem(404, "Not found", "The requested resource could not be found.")
            if model in REPLICATE_GOOGLE:
                why = self._google_input_problem(model, model_input)
                if why:
                    self.problem(f"replicate: {model}: {why}")
                    return replicate_problem(422, "Input validation failed", f"- input: {why}")
            p = _Prediction(id=self.next_id("rp"), model=model, input=model_input, polls_left=self.processing_polls)
            count = 1
            if model in REPLICATE_ARRAY_OUTPUT and model_input.get("sequential_image_generation") == "auto":
                count = int(model_input.get("max_images") or 1)
            if model in REPLICATE_ARRAY_OUTPUT and self.images_cap is not None:
                count = min(count, self.images_cap)
            for index in range(count):
                if model in REPLICATE_SVG_OUTPUT:
                    data, mime, ext = svg_document(next(self._images)), "image/svg+xml", "svg"
                else:
                    data, mime, ext = self.new_png(), "image/png", "png"
                p.files.append((f"/delivery/xezq/{p.id}/out-{index}.{ext}", data, mime))
            with self.lock:
                self.predictions[p.id] = p
                self.outputs.extend(data for _, data, _ in p.files)
            return Response(201, self._prediction_json(p), headers={"Location": f"{self.url}/v1/predictions/{p.id}"})
        polled = poll if request.method == "GET" else None
        canceled = cancel if request.method == "POST" else None
        if polled or canceled:
            if not self._authorized(request):
                return replicate_problem(401, "Unauthenticated", "You did not pass a valid authentication token")
            if polled:
                with self.lock:
                    delay = self.poll_delays.pop(0) if self.poll_delays else 0.0
                time.sleep(delay)
            with self.lock:
                p = self.predictions.get((polled or canceled).group(1))
                if p is None:
                    return replicate_problem(404, "Not found", "The requested resource could not be found.")
                if p.status in ("starting", "processing"):
                    if canceled:
                        p.status = "canceled"
                    elif p.polls_left > 0:
                        p.polls_left -= 1
                        p.status = "processing"
                    else:
                        p.status = "succeeded"
                return Response(200, self._prediction_json(p))
        self.problem(f"replicate: unexpected {request.target}")
        return replicate_problem(404, "Not found", "The requested resource could not be found.")

    @staticmethod
    def _google_input_problem(model: str, model_input: dict[str, Any]) -> str | None:
        """Why ``model_input`` breaks google/nano-banana-2 / -pro's input schema, or None."""
        unknown = sorted(set(model_input) - REPLICATE_GOOGLE_INPUT)
        if unknown:
            return f"unknown input fields {unknown}"
        if model == "google/nano-banana-2" and "safety_filter_level" in model_input:
            return "safety_filter_level is not an input of google/nano-banana-2"
        images = model_input.get("image_input")
        if images is not None and not (isinstance(images, list) and all(isinstance(i, str) for i in images)):
            return f"image_input must be a list of URIs: {str(images)[:120]}"
        if model_input.get("output_format", "png") not in ("png", "jpg"):
            return f"output_format {model_input.get('output_format')!r} is not png or jpg"
        if model_input.get("resolution", "1K") not in ("1K", "2K", "4K"):
            return f"resolution {model_input.get('resolution')!r} is not 1K, 2K or 4K"
        if not isinstance(model_input.get("aspect_ratio", ""), str):
            return f"aspect_ratio {model_input.get('aspect_ratio')!r} is not a string"
        return None


# --------------------------------------------------------------------------------------------
# §5 xAI
# --------------------------------------------------------------------------------------------


def openai_style_error(status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None) -> Response:  # noqa: A002
    return Response(status, {"error": {"message": message, "type": type, "param": param, "code": None}})


class _ImageHost(FakeServer):
    """A fake that serves the images it made at ``GET /files/<index>.png``, as upstreams that
    answer with URLs do."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[bytes] = []

    def keep(self, png: bytes) -> str:
        """Keeps ``png`` for download; returns its URL."""
        with self.lock:
            self.images.append(png)
            index = len(self.images) - 1
        return f"{self.url}/files/{index}.png"

    def serve_kept(self, request: Recorded) -> Response | None:
        """The kept image a ``GET /files/...`` asks for; ``None`` for any other request."""
        if request.method == "GET" and request.path.startswith("/files/"):
            index = int(request.path.rsplit("/", 1)[1].split(".")[0])
            image = self.images[index]
            return Response(200, image, content_type="image/svg+xml" if is_svg(image) else "image/png")
        return None


# xAI image models and what each takes: `quality` values (None: not accepted) and the most
# edit images. The retired slugs answer 404, as xAI does for a model that does not exist.
XAI_MODELS: dict[str, tuple[set[str] | None, int]] = {
    "grok-imagine-image": (None, 3),
    "grok-imagine-image-2.0": ({"low", "medium", "auto"}, 5),
}
XAI_RETIRED = {"grok-imagine-image-quality", "grok-imagine-image-pro"}


class FakeXai(_ImageHost):
    """``POST /v1/images/generations`` and ``POST /v1/images/edits`` (JSON, Bearer).

    A retired model (:data:`XAI_RETIRED`) is a 404, a field a model does not take a 400, both
    noted in :attr:`problems`. With ``images_cap`` set, a call returns at most that many images
    (fewer than ``n``: the moderation of some of them, as xAI may do)."""

    def __init__(self, key: str, images_cap: int | None = None) -> None:
        super().__init__()
        self.key = key
        self.images_cap = images_cap

    def route(self, request: Recorded) -> Response:
        if (kept := self.serve_kept(request)) is not None:
            return kept
        if request.method != "POST" or request.path not in ("/v1/images/generations", "/v1/images/edits"):
            self.problem(f"xai: unexpected {request.target}")
            return Response(404, {"code": "Some requested entity was not found", "error": f"No route {request.path}"})
        if request.headers.get("authorization") != f"Bearer {self.key}":
            self.problem(f"xai: {request.target} without `Authorization: Bearer <key>`")
            return Response(400, {"code": "Client specified an invalid argument", "error": "Incorrect API key provided: ***."})
        body, why = _json_body(self, request, "xai")
        if body is None:
            return openai_style_error(400, why or "bad body")
        if not isinstance(body.get("model"), str) or not isinstance(body.get("prompt"), str) or not body["prompt"]:
            self.problem(f"xai: model or prompt missing: {str(body)[:300]}")
            return Response(422, {"code": "Client specified an invalid argument", "error": "Failed to deserialize the JSON body: missing field"})
        model = body["model"]
        if model in XAI_RETIRED or model not in XAI_MODELS:
            self.problem(f"xai: {request.target} calls `{model}`, which xAI does not serve")
            return Response(
                404,
                {
                    "code": "Some requested entity was not found",
                    "error": f"The model {model} does not exist or your team does not have access to it.",
                },
            )
        qualities, max_images = XAI_MODELS[model]
        for unsupported in ("size", "style"):
            if unsupported in body:
                self.problem(f"xai: `{unsupported}` is not supported by xAI")
                return openai_style_error(400, f"Argument not supported: {unsupported}", param=unsupported)
        if "quality" in body and (qualities is None or body["quality"] not in qualities):
            self.problem(f"xai: quality {body['quality']!r} on {model} (takes {sorted(qualities or [])})")
            return openai_style_error(400, f"Argument not supported on this model: quality={body['quality']}", param="quality")
        if request.path.endswith("/edits"):
            inputs = [body["image"]] if "image" in body else body.get("images")
            if not isinstance(inputs, list) or not inputs or not all(
                isinstance(i, dict) and isinstance(i.get("url"), str) and i.get("type") == "image_url" for i in inputs
            ):
                self.problem(f"xai: edits without `image`/`images` of {{url, type: image_url}}: {str(body)[:300]}")
                return openai_style_error(400, "image is required for edits", param="image")
            if len(inputs) > max_images:
                self.problem(f"xai: {len(inputs)} edit images on {model} (at most {max_images})")
                return openai_style_error(400, f"At most {max_images} images are supported", param="images")
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 10:
            self.problem(f"xai: n {n!r}")
            return openai_style_error(400, "n must be between 1 and 10", param="n")
        response_format = body.get("response_format", "url")
        data = []
        for _ in range(n if self.images_cap is None else min(n, self.images_cap)):
            png = self.new_png()
            url = self.keep(png)
            item: dict[str, Any] = {"mime_type": "image/png", "revised_prompt": ""}
            if response_format == "b64_json":
                item.update(b64_json=base64.b64encode(png).decode(), url=None)
            else:
                item.update(url=url, b64_json=None)
            data.append(item)
        return Response(200, {"data": data, "usage": {"cost_in_usd_ticks": 200_000_000 * len(data)}, "block_reason": None})


# --------------------------------------------------------------------------------------------
# §6 Black Forest Labs
# --------------------------------------------------------------------------------------------

BFL_ENDPOINTS = {
    "flux-pro-1.1",
    "flux-pro-1.1-ultra",
    "flux-dev",
    "flux-pro",
    "flux-kontext-pro",
    "flux-kontext-max",
    "flux-pro-1.0-fill",
    "flux-pro-1.0-expand",
    "flux-2-pro",
    "flux-2-max",
    "flux-2-flex",
    "flux-2-klein-4b",
    "flux-2-klein-9b",
}
# Fields carrying input images: with any of them BFL takes `safety_tolerance` up to 2 only.
BFL_INPUT_IMAGE = re.compile(r"^(image_prompt|input_image(_\d+)?)$")


# Where the fake's polling_url points: BFL's regional form, under a prefix that rebuilding the
# URL from the base (`{base}/v1/get_result?id=`) would not give.
BFL_POLL_PATH = "/us1/v1/get_result"


@dataclass
class _BflTask:
    id: str
    endpoint: str
    body: dict[str, Any]
    polls_left: int
    sample: bytes
    ready: bool = False


class FakeBfl(FakeServer):
    """Two ports: ``api`` takes ``POST /v1/{endpoint}`` (``x-key``) and answers ``{id,
    polling_url}``; the polling URL is on the API origin (where a client may send the key) but
    under :data:`BFL_POLL_PATH`, a path that rebuilding the URL from the base would not give
    (the legacy ``/v1/get_result`` is answered 404 and noted as a problem). Polls answer
    ``Pending`` ``pending_polls`` times, then ``Ready`` with a ``result.sample`` URL on the
    ``delivery`` port, a different origin, like BFL's ``delivery-*.bfl.ai``.

    FLUX.2 (``/v1/flux-2-*``) takes ``width``/``height`` (multiples of 16, at least 64),
    ``safety_tolerance`` 0-5 and ``output_format`` jpeg|png. With any input image
    (``input_image*``, ``image_prompt``) every endpoint refuses ``safety_tolerance`` > 2 (422,
    noted in :attr:`problems`). With ``task_error`` set, tasks end ``{"status": "Error",
    "error": task_error}`` instead of ``Ready``."""

    listeners = ("api", "delivery")

    def __init__(self, key: str, pending_polls: int = 1, task_error: str | None = None) -> None:
        super().__init__()
        self.key = key
        self.pending_polls = pending_polls
        self.task_error = task_error
        self.tasks: dict[str, _BflTask] = {}
        self.samples: list[bytes] = []

    @property
    def api_url(self) -> str:
        return self.url_of("api")

    def submit_calls(self) -> list[Recorded]:
        return [r for r in self.requests if r.listener == "api" and r.method == "POST"]

    def poll_calls(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/get_result")]

    def download_calls(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/delivery/")]

    def route(self, request: Recorded) -> Response:
        if request.listener == "api":
            return self._api(request)
        return self._delivery(request)

    def _api(self, request: Recorded) -> Response:
        if request.method == "GET" and request.path == BFL_POLL_PATH:
            return self._poll(request)
        if request.method == "GET" and request.path.endswith("/get_result"):
            self.problem(f"bfl: polled {request.path} instead of the returned polling_url ({BFL_POLL_PATH})")
            return Response(404, {"detail": "Not Found"})
        match = re.fullmatch(r"/v1/([a-z0-9.\-]+)", request.path)
        if request.method != "POST" or not match or match.group(1) not in BFL_ENDPOINTS:
            self.problem(f"bfl: unexpected {request.target} on the API host")
            return Response(404, {"detail": "Not Found"})
        if request.headers.get("x-key") != self.key:
            self.problem(f"bfl: {request.target} without `x-key` of the configured key")
            return Response(403, {"detail": "Not authenticated - Invalid Authentication"})
        body, why = _json_body(self, request, "bfl")
        if body is None:
            return Response(422, {"detail": why})
        if not isinstance(body.get("prompt"), str):
            self.problem(f"bfl: prompt missing: {str(body)[:300]}")
            return Response(422, {"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]})
        endpoint = match.group(1)
        if endpoint == "flux-pro-1.1":
            for side in ("width", "height"):
                value = body.get(side)
                if value is not None and not (isinstance(value, int) and 256 <= value <= 1440 and value % 32 == 0):
                    self.problem(f"bfl: {side} {value!r} is not 256–1440 in steps of 32")
                    return Response(422, {"detail": [{"loc": ["body", side], "msg": "invalid", "type": "value_error"}]})
        if endpoint.startswith("flux-2-"):
            why = self._flux_2_problem(body)
            if why:
                self.problem(f"bfl: {endpoint}: {why}")
                return Response(422, {"detail": [{"loc": ["body"], "msg": why, "type": "value_error"}]})
        inputs = [key for key in body if BFL_INPUT_IMAGE.match(key) and body[key] is not None]
        tolerance = body.get("safety_tolerance")
        if inputs and isinstance(tolerance, int) and tolerance > 2:
            self.problem(f"bfl: safety_tolerance {tolerance} with input images {inputs} (at most 2)")
            return Response(
                422,
                {
                    "detail": [
                        {
                            "loc": ["body", "safety_tolerance"],
                            "msg": "safety_tolerance must be at most 2 with input images",
                            "type": "value_error",
                        }
                    ]
                },
            )
        for key, value in body.items():
            if key in ("image_prompt", "input_image") or key.startswith("input_image_"):
                if isinstance(value, str) and value.startswith("data:"):
                    self.problem(f"bfl: {key} must be bare base64 or a URL, not a data URL")
        task = _BflTask(id=self.next_id("bfl-task-"), endpoint=endpoint, body=body, polls_left=self.pending_polls, sample=self.new_png())
        with self.lock:
            self.tasks[task.id] = task
            self.samples.append(task.sample)
        return Response(
            200,
            {
                "id": task.id,
                "polling_url": f"{self.url_of('api')}{BFL_POLL_PATH}?id={task.id}",
                "cost": 4.0,
                "input_mp": 0.0,
                "output_mp": 0.79,
            },
        )

    @staticmethod
    def _flux_2_problem(body: dict[str, Any]) -> str | None:
        """Why ``body`` breaks FLUX.2's input schema, or None."""
        for side in ("width", "height"):
            value = body.get(side)
            if value is not None and not (isinstance(value, int) and value >= 64 and value % 16 == 0):
                return f"{side} {value!r} is not a multiple of 16 of at least 64"
        width, height = body.get("width"), body.get("height")
        if isinstance(width, int) and isinstance(height, int) and width * height > 4 * 1024 * 1024:
            return f"{width}x{height} is over 4 megapixels"
        tolerance = body.get("safety_tolerance")
        if tolerance is not None and not (isinstance(tolerance, int) and 0 <= tolerance <= 5):
            return f"safety_tolerance {tolerance!r} is not 0-5"
        if body.get("output_format", "jpeg") not in ("jpeg", "png"):
            return f"output_format {body.get('output_format')!r} is not jpeg or png"
        for unsupported in ("aspect_ratio", "image_prompt", "raw"):
            if unsupported in body:
                return f"`{unsupported}` is not a FLUX.2 input"
        return None

    def _poll(self, request: Recorded) -> Response:
        if request.headers.get("x-key") != self.key:
            self.problem("bfl: poll without `x-key` of the configured key")
            return Response(403, {"detail": "Not authenticated - Invalid Authentication"})
        task_id = (request.query.get("id") or [""])[0]
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                return Response(200, {"id": task_id, "status": "Task not found", "result": None})
            if not task.ready and task.polls_left > 0:
                task.polls_left -= 1
                return Response(200, {"id": task.id, "status": "Pending", "result": None, "progress": 0.5, "details": None})
            if self.task_error is not None:
                return Response(
                    200,
                    {"id": task.id, "status": "Error", "result": None, "progress": None, "details": None, "error": self.task_error},
                )
            task.ready = True
        sample = f"{self.url_of('delivery')}/delivery/{task.id}/sample.png?se=2026-01-01T00%3A10%3A00Z&sig=fake"
        return Response(
            200,
            {
                "id": task.id,
                "status": "Ready",
                "result": {
                    "sample": sample,
                    "prompt": task.body.get("prompt"),
                    "seed": 42,
                    "start_time": 1730000000.1,
                    "end_time": 1730000004.9,
                    "duration": 4.8,
                },
                "progress": None,
                "details": None,
            },
        )

    def _delivery(self, request: Recorded) -> Response:
        if request.method == "GET" and request.path.startswith("/delivery/"):
            task_id = request.path.split("/")[2]
            with self.lock:
                task = self.tasks.get(task_id)
            if task is None or not task.ready:
                return Response(404, "BlobNotFound", content_type="application/xml")
            return Response(200, task.sample, content_type="image/png")
        self.problem(f"bfl: unexpected {request.target} on the delivery host")
        return Response(404, "BlobNotFound", content_type="application/xml")


# --------------------------------------------------------------------------------------------
# §7 fal queue API
# --------------------------------------------------------------------------------------------


@dataclass
class _FalRequest:
    id: str
    app: str  # owner/alias, the subpath dropped
    endpoint: str  # the full model id submitted to
    body: dict[str, Any]
    waiting: list[str]  # statuses still to answer before COMPLETED
    images: list[bytes]
    completed: bool = False


class FakeFal(_ImageHost):
    """``POST /{owner}/{alias}[/{subpath}]`` (``Authorization: Key``) answers ``IN_QUEUE`` with
    ``status_url``/``response_url``/``cancel_url`` without the subpath; ``GET status_url``
    answers ``IN_QUEUE`` then ``IN_PROGRESS`` (HTTP 202), then ``COMPLETED``; ``GET
    response_url`` answers the output JSON (an error while still in progress); image URLs are
    served by this fake."""

    def __init__(self, key: str, waiting: tuple[str, ...] = ("IN_QUEUE", "IN_PROGRESS")) -> None:
        super().__init__()
        self.key = key
        self.waiting = waiting
        self.jobs: dict[str, _FalRequest] = {}

    def submit_calls(self) -> list[Recorded]:
        return [r for r in self.calls("POST") if "/requests/" not in r.path]

    def status_calls(self) -> list[Recorded]:
        return [r for r in self.calls("GET") if re.search(r"/requests/[^/]+/status$", r.path)]

    def result_calls(self) -> list[Recorded]:
        return [r for r in self.calls("GET") if re.search(r"/requests/[^/]+$", r.path)]

    def download_calls(self) -> list[Recorded]:
        return self.calls("GET", prefix="/files/")

    def _urls(self, job: _FalRequest) -> dict[str, str]:
        base = f"{self.url}/{job.app}/requests/{job.id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    def route(self, request: Recorded) -> Response:
        if (kept := self.serve_kept(request)) is not None:
            return kept
        path = request.path
        if request.headers.get("authorization") != f"Key {self.key}":
            self.problem(f"fal: {request.target} without `Authorization: Key <key>` (got {request.headers.get('authorization')!r})")
            return Response(401, {"detail": "Invalid authentication credentials"})
        status = re.fullmatch(r"/([^/]+/[^/]+)/requests/([^/]+)/status", path)
        result = re.fullmatch(r"/([^/]+/[^/]+)/requests/([^/]+)", path)
        cancel = re.fullmatch(r"/([^/]+/[^/]+)/requests/([^/]+)/cancel", path)
        if request.method == "GET" and (status or result):
            match = status or result
            assert match is not None
            with self.lock:
                job = self.jobs.get(match.group(2))
            if job is None or job.app != match.group(1):
                self.problem(f"fal: {request.target} names no submitted request (the subpath must be dropped)")
                return Response(404, {"detail": "Request not found"})
            if status:
                with self.lock:
                    if job.waiting:
                        current = job.waiting.pop(0)
                        extra: dict[str, Any] = (
                            {"queue_position": 0} if current == "IN_QUEUE" else {"logs": [{"message": "step 1/8", "level": "INFO", "source": "USER", "timestamp": "2026-01-01T00:00:01Z"}]}
                        )
                        return Response(202, {"status": current, "request_id": job.id, **self._urls(job), **extra})
                    job.completed = True
                return Response(
                    200,
                    {"status": "COMPLETED", "request_id": job.id, **self._urls(job), "logs": None, "metrics": {"inference_time": 0.9}},
                )
            if not job.completed:
                self.problem("fal: fetched response_url before the status said COMPLETED")
                return Response(400, {"detail": "Request is still in progress"})
            images = []
            for png in job.images:
                index = self.images.index(png)
                kind = "image/svg+xml" if is_svg(png) else "image/png"
                images.append({"url": f"{self.url}/files/{index}.png", "width": 16, "height": 16, "content_type": kind})
            return Response(
                200,
                {
                    "images": images,
                    "timings": {"inference": 0.9},
                    "seed": 12345,
                    "has_nsfw_concepts": [False] * len(images),
                    "prompt": job.body.get("prompt"),
                },
            )
        if request.method == "PUT" and cancel:
            return Response(202, {"status": "CANCELLATION_REQUESTED"})
        submit = re.fullmatch(r"/([^/]+/[^/]+)(/[^/]+)*", path)
        if request.method != "POST" or not submit or "/requests/" in path:
            self.problem(f"fal: unexpected {request.target}")
            return Response(404, {"detail": "Not Found"})
        body, why = _json_body(self, request, "fal")
        if body is None:
            return Response(422, {"detail": why})
        if "input" in body and "prompt" not in body:
            self.problem("fal: the body is the model input itself, not wrapped in `input`")
        # Background removal and vectorize take an image, no prompt; vectorize answers SVG.
        image_only = isinstance(body.get("image_url"), str) and "prompt" not in body
        if not image_only and (not isinstance(body.get("prompt"), str) or not body["prompt"]):
            self.problem(f"fal: prompt missing: {str(body)[:300]}")
            return Response(422, {"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]})
        count = body.get("num_images", 1)
        vectorize = submit.group(1) == "fal-ai/recraft"
        images = [svg_document(len(self.images)) if vectorize else self.new_png() for _ in range(int(count))]
        job = _FalRequest(
            id=f"80e732af-660e-45cd-bd63-{next(self._ids):012d}",
            app=submit.group(1),
            endpoint=path.lstrip("/"),
            body=body,
            waiting=list(self.waiting),
            images=images,
        )
        with self.lock:
            self.jobs[job.id] = job
            self.images.extend(images)
        return Response(200, {"status": "IN_QUEUE", "queue_position": 0, "request_id": job.id, **self._urls(job)}, headers={"x-fal-request-id": job.id})


# --------------------------------------------------------------------------------------------
# §8 Together
# --------------------------------------------------------------------------------------------


class FakeTogether(_ImageHost):
    """``POST /v1/images/generations`` (Bearer), ``response_format`` ``base64`` or ``url``."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def route(self, request: Recorded) -> Response:
        if (kept := self.serve_kept(request)) is not None:
            return kept
        if request.method != "POST" or request.path != "/v1/images/generations":
            self.problem(f"together: unexpected {request.target}")
            return openai_style_error(404, f"Unknown path {request.path}")
        if request.headers.get("authorization") != f"Bearer {self.key}":
            self.problem("together: request without `Authorization: Bearer <key>`")
            return openai_style_error(401, "Invalid API key provided.", type="invalid_api_key")
        body, why = _json_body(self, request, "together")
        if body is None:
            return openai_style_error(400, why or "bad body")
        if not isinstance(body.get("model"), str) or not isinstance(body.get("prompt"), str) or not body["prompt"]:
            self.problem(f"together: model or prompt missing: {str(body)[:300]}")
            return openai_style_error(400, "model and prompt are required")
        response_format = body.get("response_format", "url")
        if response_format not in ("base64", "url"):
            self.problem(f"together: response_format {response_format!r} (Together takes `base64` or `url`)")
            return openai_style_error(400, f"Invalid response_format: {response_format}", param="response_format")
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 4:
            self.problem(f"together: n {n!r}")
            return openai_style_error(400, "n must be between 1 and 4", param="n")
        data = []
        for index in range(n):
            png = self.new_png()
            url = self.keep(png)
            if response_format == "base64":
                data.append({"index": index, "b64_json": base64.b64encode(png).decode(), "type": "b64_json"})
            else:
                data.append({"index": index, "url": url, "type": "url"})
        return Response(
            200,
            {"id": f"oFuwv7Y-{self.next_id('')}-SJC", "model": body["model"], "object": "list", "data": data},
        )


# --------------------------------------------------------------------------------------------
# providers-2.md §12 Ideogram 3.0
# --------------------------------------------------------------------------------------------

IDEOGRAM_RESOLUTIONS = set(
    """512x1536 576x1408 576x1472 576x1536 640x1344 640x1408 640x1472 640x1536 704x1152 704x1216
    704x1280 704x1344 704x1408 704x1472 736x1312 768x1088 768x1216 768x1280 768x1344 800x1280
    832x960 832x1024 832x1088 832x1152 832x1216 832x1248 864x1152 896x960 896x1024 896x1088
    896x1120 896x1152 960x832 960x896 960x1024 960x1088 1024x832 1024x896 1024x960 1024x1024
    1088x768 1088x832 1088x896 1088x960 1120x896 1152x704 1152x832 1152x864 1152x896 1216x704
    1216x768 1216x832 1248x832 1280x704 1280x768 1280x800 1312x736 1344x640 1344x704 1344x768
    1408x576 1408x640 1408x704 1472x576 1472x640 1472x704 1536x512 1536x576 1536x640""".split()
)
IDEOGRAM_RATIOS = {"1x3", "3x1", "1x2", "2x1", "9x16", "16x9", "10x16", "16x10", "2x3", "3x2", "3x4", "4x3", "4x5", "5x4", "1x1"}
IDEOGRAM_ENUMS = {
    "rendering_speed": {"FLASH", "TURBO", "DEFAULT", "QUALITY"},
    "magic_prompt": {"AUTO", "ON", "OFF"},
    "style_type": {"AUTO", "GENERAL", "REALISTIC", "DESIGN", "FICTION"},
}
IDEOGRAM_TEXT = {
    "prompt",
    "seed",
    "resolution",
    "aspect_ratio",
    "rendering_speed",
    "magic_prompt",
    "negative_prompt",
    "num_images",
    "color_palette",
    "style_codes",
    "style_type",
    "style_preset",
}
IDEOGRAM_FILES = {"style_reference_images", "character_reference_images", "character_reference_images_mask"}
IDEOGRAM_IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp"}
IDEOGRAM_SAFETY_ERROR = {"error": "Prompt or provided image failed the safety checks"}


class FakeIdeogram(_ImageHost):
    """``POST /v1/ideogram-v3/generate`` and ``/remix`` (providers-2.md §12): multipart/form-data
    with the key in ``Api-Key``, checked part by part against the documented fields (one of the 69
    ``resolution``s or 15 ``aspect_ratio``s written ``16x9``, never both; the enums;
    ``num_images`` 1-8; ``seed`` 0-2^31-1; ``image`` and ``image_weight`` on ``/remix`` only).
    Answers ``{"created": <ISO>, "data": [...]}`` with expiring-style URLs that this fake serves,
    only to requests without the key; ``prompt`` is MagicPrompt's rewrite unless it is ``OFF``.

    Keywords in the prompt: ``MODERATE`` → 422 (the safety check), ``RATELIMIT`` → 429 with
    ``Retry-After``, ``FAIL500`` → 500, ``GARBAGE`` → a 200 without ``data``, ``UNSAFEIMG`` →
    the images at even indexes (the first, third, ...) withheld: ``is_image_safe: false`` and
    no URL (so one image asked is every image withheld)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def api_calls(self) -> list[Recorded]:
        return self.calls("POST", prefix="/v1/")

    def download_calls(self) -> list[Recorded]:
        return self.calls("GET", prefix="/files/")

    def route(self, request: Recorded) -> Response:
        if request.method == "GET" and request.path.startswith("/files/") and "api-key" in request.headers:
            self.problem("ideogram: an image download carried the `Api-Key`")
        if (kept := self.serve_kept(request)) is not None:
            return kept
        action = request.path.removeprefix("/v1/ideogram-v3/")
        if request.method != "POST" or action not in ("generate", "remix"):
            self.problem(f"ideogram: unexpected {request.target}")
            return Response(404, {"error": f"Not found: {request.path}"})
        if request.headers.get("api-key") != self.key:
            self.problem(f"ideogram: {request.target} without `Api-Key: <key>`")
            return Response(401, {"error": "Not authorized to generate an image."})
        if "authorization" in request.headers:
            self.problem("ideogram: an `Authorization` header was sent (Ideogram takes `Api-Key`)")
        if not request.is_multipart:
            self.problem(f"ideogram: {request.target} is {request.headers.get('content-type')!r}, not multipart/form-data")
            return Response(400, {"error": "Expected multipart/form-data"})
        try:
            parts = request.parts
        except ValueError as error:
            self.problem(f"ideogram: unreadable form: {error}")
            return Response(400, {"error": f"Invalid form: {error}"})
        if why := self._form_problem(action, parts):
            self.problem(f"ideogram: {why}; parts {request.part_summary()}")
            return Response(400, {"error": why})
        form = request.form
        prompt = form["prompt"]
        if "MODERATE" in prompt:
            return Response(422, IDEOGRAM_SAFETY_ERROR)
        if "RATELIMIT" in prompt:
            return Response(429, {"error": "Too many requests"}, headers={"Retry-After": "7"})
        if "FAIL500" in prompt:
            return Response(500, {"error": "Internal server error"})
        if "GARBAGE" in prompt:
            return Response(200, {"created": "2026-06-02T16:24:11Z"})
        revised = prompt if form.get("magic_prompt") == "OFF" else f"{prompt}, vivid poster art with crisp lettering"
        data = []
        for index in range(int(form.get("num_images", "1"))):
            item: dict[str, Any] = {
                "prompt": revised,
                "resolution": form.get("resolution", "1024x1024"),
                "seed": int(form.get("seed", "12345")),
                "style_type": form.get("style_type", "GENERAL"),
            }
            if "UNSAFEIMG" in prompt and index % 2 == 0:
                item.update(url=None, is_image_safe=False)
            else:
                url = self.keep(self.new_png())
                item.update(url=f"{url}?exp=1743867804&sig=e13e12677633f646", is_image_safe=True)
            data.append(item)
        return Response(200, {"created": "2026-06-02T16:24:11Z", "data": data})

    @staticmethod
    def _form_problem(action: str, parts: list[Any]) -> str | None:
        """Why the form breaks the documented fields, or None."""
        names = [part.name for part in parts]
        repeated = sorted({n for n in names if names.count(n) > 1} - IDEOGRAM_FILES)
        if repeated:
            return f"repeated parts {repeated}"
        text = {part.name: part.text for part in parts if not part.is_file}
        files = {part.name: part for part in parts if part.is_file}
        allowed_text = IDEOGRAM_TEXT | ({"image_weight"} if action == "remix" else set())
        allowed_files = IDEOGRAM_FILES | ({"image"} if action == "remix" else set())
        if unknown := sorted(set(text) - allowed_text) + sorted(set(files) - allowed_files):
            return f"/{action} takes no {unknown}"
        if not text.get("prompt"):
            return "`prompt` is required"
        if "resolution" in text and "aspect_ratio" in text:
            return "`resolution` cannot be used in conjunction with `aspect_ratio`"
        if "resolution" in text and text["resolution"] not in IDEOGRAM_RESOLUTIONS:
            return f"resolution {text['resolution']!r} is not one of Ideogram 3.0's"
        if "aspect_ratio" in text and text["aspect_ratio"] not in IDEOGRAM_RATIOS:
            return f"aspect_ratio {text['aspect_ratio']!r} is not one of Ideogram 3.0's (written like 16x9)"
        for name, values in IDEOGRAM_ENUMS.items():
            if name in text and text[name] not in values:
                return f"{name} {text[name]!r} is not one of {sorted(values)}"
        for name, low, high in (("num_images", 1, 8), ("seed", 0, 2**31 - 1), ("image_weight", 1, 100)):
            if name in text and not (re.fullmatch(r"\d+", text[name]) and low <= int(text[name]) <= high):
                return f"{name} {text[name]!r} is not an integer from {low} to {high}"
        if action == "remix":
            image = files.get("image")
            if image is None:
                return "/remix needs the `image` file"
            if image.content_type not in IDEOGRAM_IMAGE_TYPES or len(image.data) > 10 * 1024 * 1024:
                return f"the remixed image is {image.content_type} of {len(image.data)} bytes (JPEG, PNG or WebP up to 10 MB)"
        return None


# --------------------------------------------------------------------------------------------
# providers-2.md §8 Alibaba Cloud Model Studio / DashScope (Qwen-Image)
# --------------------------------------------------------------------------------------------

DASHSCOPE_API = "/api/v1"
DASHSCOPE_FIXED_SIZES = {"1664*928", "1472*1104", "1472*1140", "1328*1328", "1104*1472", "1140*1472", "928*1664"}
DASHSCOPE_FIXED = {"qwen-image", "qwen-image-plus", "qwen-image-max"}  # five sizes, n = 1, no images
DASHSCOPE_FREE = {"qwen-image-2.0", "qwen-image-2.0-pro", "qwen-image-3.0", "qwen-image-3.0-pro"}  # 0-3 images, n 1-6
DASHSCOPE_EDIT = {"qwen-image-edit", "qwen-image-edit-plus", "qwen-image-edit-max"}  # 1-3 images
DASHSCOPE_TASK_MODELS = {"qwen-image", "qwen-image-plus"}  # the only ones the text2image task API takes
DASHSCOPE_SIZE = re.compile(r"^([1-9]\d*)\*([1-9]\d*)$")


def dashscope_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"request_id": "7a1b0c2d-e2e0-0000-0000-000000000000", "code": code, "message": message}, headers=headers or {})


@dataclass
class _DashScopeTask:
    id: str
    body: dict[str, Any]
    polls_left: int
    outcome: str  # "succeed", "fail", "moderate", "never"
    status: str = "PENDING"
    url: str | None = None


class FakeDashScope(_ImageHost):
    """DashScope under :data:`DASHSCOPE_API` (Bearer key): ``POST
    services/aigc/multimodal-generation/generation`` answers ``output.choices[0].message.content``
    with one ``{"image": URL}`` per image; ``POST services/aigc/text2image/image-synthesis`` (only
    with ``X-DashScope-Async: enable``, only ``qwen-image[-plus]``) answers a ``PENDING`` task that
    ``GET tasks/{id}`` answers ``RUNNING`` ``running_polls`` times, then ``SUCCEEDED`` with a
    result URL; ``POST tasks/{id}/cancel`` cancels a task still ``PENDING``. Result URLs carry an
    OSS-style signature whose query string must be kept; a download without it is a problem.

    Mixing the modes is the real 403 ``AccessDenied``; a size not ``W*H``, a size or ``n`` the
    model does not take, images where the model takes none (or too many), and a missing
    ``prompt_extend`` / ``watermark`` (their defaults differ between doc revisions, so an
    adapter must send them) are noted in :attr:`problems`. Prompt keywords: ``MODERATE``
    (``DataInspectionFailed``: HTTP 400 on the synchronous API, a ``FAILED`` task on the task
    API), ``RATELIMIT`` (429 ``Throttling.RateQuota`` with ``Retry-After``), ``FAIL500``,
    ``ERR200`` (HTTP 200 carrying an error code), ``B64OUT`` (base64 images instead of URLs),
    ``FAILJOB`` (a task that ends ``FAILED``) and ``NEVER`` (a task that never ends)."""

    def __init__(self, key: str, running_polls: int = 1) -> None:
        super().__init__()
        self.key = key
        self.running_polls = running_polls
        self.tasks: dict[str, _DashScopeTask] = {}

    @property
    def api_url(self) -> str:
        return f"{self.url}{DASHSCOPE_API}"

    def generation_calls(self) -> list[Recorded]:
        return self.calls("POST", f"{DASHSCOPE_API}/services/aigc/multimodal-generation/generation")

    def submit_calls(self) -> list[Recorded]:
        return self.calls("POST", f"{DASHSCOPE_API}/services/aigc/text2image/image-synthesis")

    def poll_calls(self) -> list[Recorded]:
        return self.calls("GET", prefix=f"{DASHSCOPE_API}/tasks/")

    def cancel_calls(self) -> list[Recorded]:
        return [r for r in self.calls("POST", prefix=f"{DASHSCOPE_API}/tasks/") if r.path.endswith("/cancel")]

    def route(self, request: Recorded) -> Response:
        if request.method == "GET" and request.path.startswith("/files/"):
            if not {"Expires", "Signature"} <= set(request.query):
                self.problem(f"dashscope: result {request.path} downloaded without its signed query string")
                return Response(403, "<Error><Code>AccessDenied</Code></Error>", content_type="application/xml")
            if "authorization" in request.headers:
                self.problem("dashscope: the API key was sent to the result host")
            return self.serve_kept(request) or Response(404, "not found")
        if not request.path.startswith(f"{DASHSCOPE_API}/"):
            self.problem(f"dashscope: unexpected {request.target}")
            return dashscope_error(404, "NotFound", f"Not found: {request.path}")
        if request.headers.get("authorization") != f"Bearer {self.key}":
            self.problem(f"dashscope: {request.target} without `Authorization: Bearer <key>`")
            return dashscope_error(401, "InvalidApiKey", "Invalid API-key provided.")
        route = request.path[len(DASHSCOPE_API) :]
        if request.method == "POST" and route == "/services/aigc/multimodal-generation/generation":
            return self._generate(request)
        if request.method == "POST" and route == "/services/aigc/text2image/image-synthesis":
            return self._submit(request)
        match = re.fullmatch(r"/tasks/([A-Za-z0-9_-]+)(/cancel)?", route)
        if match and request.method == "GET" and not match.group(2):
            return self._poll(match.group(1))
        if match and request.method == "POST" and match.group(2):
            return self._cancel(match.group(1))
        self.problem(f"dashscope: unexpected {request.target}")
        return dashscope_error(404, "NotFound", f"Not found: {request.path}")

    # -- requests --------------------------------------------------------------------------

    def _parameters_problem(self, model: str, parameters: Any, images: int) -> str | None:
        """Why ``parameters`` (and ``images`` input images) break ``model``'s limits, or None."""
        if not isinstance(parameters, dict):
            return "`parameters` is not an object"
        for flag in ("prompt_extend", "watermark"):
            if model != "qwen-image-edit" and not isinstance(parameters.get(flag), bool):
                return f"`{flag}` not sent as a boolean (its default differs between doc revisions)"
        n, size = parameters.get("n", 1), parameters.get("size")
        if size is not None:
            match = DASHSCOPE_SIZE.match(size) if isinstance(size, str) else None
            if not match:
                return f"size {size!r} is not `W*H`"
            width, height = int(match.group(1)), int(match.group(2))
            if model in DASHSCOPE_FIXED and size not in DASHSCOPE_FIXED_SIZES:
                return f"size {size} is not one of {model}'s sizes"
            if model in DASHSCOPE_FREE and not 512 * 512 <= width * height <= 2048 * 2048:
                return f"size {size} is outside 512*512..2048*2048 pixels"
            if model == "qwen-image-edit":
                return "qwen-image-edit takes no size"
            if model in DASHSCOPE_EDIT and not (512 <= width <= 2048 and 512 <= height <= 2048):
                return f"size {size}: each side must be 512-2048"
        one_only = model in DASHSCOPE_FIXED or model == "qwen-image-edit"
        if not isinstance(n, int) or not 1 <= n <= (1 if one_only else 6):
            return f"n {n!r} for {model}"
        seed = parameters.get("seed")
        if seed is not None and not (isinstance(seed, int) and 0 <= seed <= 2147483647):
            return f"seed {seed!r} is outside 0..2147483647"
        if model in DASHSCOPE_FIXED and images:
            return f"{model} takes no input image"
        if model in DASHSCOPE_EDIT and not 1 <= images <= 3:
            return f"{model} takes 1-3 input images, got {images}"
        if images > 3:
            return f"{images} input images (at most 3)"
        return None

    def _keyword_failure(self, prompt: str) -> Response | None:
        if "RATELIMIT" in prompt:
            return dashscope_error(429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.", {"Retry-After": "7"})
        if "FAIL500" in prompt:
            return dashscope_error(500, "InternalError", "An internal error has occured, please try again later.")
        if "ERR200" in prompt:
            return dashscope_error(200, "InternalError.Algo", "An internal error occurred in the algorithm.")
        return None

    def _generate(self, request: Recorded) -> Response:
        if "x-dashscope-async" in request.headers:
            self.problem("dashscope: X-DashScope-Async sent to the synchronous API")
            return dashscope_error(403, "AccessDenied", "current user api does not support asynchronous calls")
        body, why = _json_body(self, request, "dashscope")
        if body is None:
            return dashscope_error(400, "InvalidParameter", why or "bad body")
        model = body.get("model")
        if model not in DASHSCOPE_FIXED | DASHSCOPE_FREE | DASHSCOPE_EDIT:
            self.problem(f"dashscope: unknown model {model!r}")
            return dashscope_error(400, "InvalidParameter", f"Model not exist: {model}")
        messages = (body.get("input") or {}).get("messages")
        if not isinstance(messages, list) or len(messages) != 1 or messages[0].get("role") != "user":
            self.problem(f"dashscope: input.messages is not one user message: {str(body.get('input'))[:300]}")
            return dashscope_error(400, "InvalidParameter", "input.messages must hold one user message")
        content = messages[0].get("content")
        items = content if isinstance(content, list) else []
        texts = [item["text"] for item in items if isinstance(item, dict) and set(item) == {"text"}]
        images = [item["image"] for item in items if isinstance(item, dict) and set(item) == {"image"}]
        if len(texts) != 1 or len(texts) + len(images) != len(items) or not isinstance(texts[0], str):
            self.problem(f"dashscope: content must be one {{text}} item and {{image}} items: {str(content)[:300]}")
            return dashscope_error(400, "InvalidParameter", "invalid content")
        for image in images:
            if isinstance(image, str) and image.startswith("data:"):
                decode_data_url(image)
            elif not (isinstance(image, str) and image.startswith(("http://", "https://"))):
                self.problem(f"dashscope: input image is neither a URL nor a data URL: {str(image)[:80]}")
        parameters = body.get("parameters")
        why = self._parameters_problem(model, parameters, len(images))
        if why:
            self.problem(f"dashscope: {model}: {why}")
            return dashscope_error(400, "InvalidParameter", why)
        prompt = texts[0]
        if "MODERATE" in prompt:
            return dashscope_error(400, "DataInspectionFailed", "Input data may contain inappropriate content.")
        if (failure := self._keyword_failure(prompt)) is not None:
            return failure
        if "GARBAGE" in prompt:
            return Response(200, {"output": {"choices": []}, "request_id": "r"})
        if "SLOW" in prompt:
            time.sleep(3)
        n = parameters.get("n", 1)
        pngs = [self.new_png() for _ in range(n)]
        if "B64OUT" in prompt:
            content_out = [{"image": base64.b64encode(png).decode()} for png in pngs]
            with self.lock:
                self.images.extend(pngs)
        else:
            content_out = [{"image": self._signed(self.keep(png))} for png in pngs]
        return Response(
            200,
            {
                "output": {"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": content_out}}]},
                "usage": {"width": 16, "height": 16, "image_count": n},
                "request_id": f"d0250a3d-{self.next_id('')}",
            },
        )

    def _submit(self, request: Recorded) -> Response:
        if request.headers.get("x-dashscope-async") != "enable":
            self.problem("dashscope: text2image submitted without `X-DashScope-Async: enable`")
            return dashscope_error(403, "AccessDenied", "current user api does not support synchronous calls")
        body, why = _json_body(self, request, "dashscope")
        if body is None:
            return dashscope_error(400, "InvalidParameter", why or "bad body")
        model = body.get("model")
        if model not in DASHSCOPE_TASK_MODELS:
            self.problem(f"dashscope: {model!r} submitted to the text2image task API")
            return dashscope_error(403, "AccessDenied", "current user api does not support asynchronous calls")
        prompt = (body.get("input") or {}).get("prompt")
        if not isinstance(prompt, str) or not prompt or "messages" in body.get("input", {}):
            self.problem(f"dashscope: the task API takes input.prompt: {str(body.get('input'))[:300]}")
            return dashscope_error(400, "InvalidParameter", "input.prompt is required")
        why = self._parameters_problem(model, body.get("parameters"), 0)
        if why:
            self.problem(f"dashscope: {model}: {why}")
            return dashscope_error(400, "InvalidParameter", why)
        if (failure := self._keyword_failure(prompt)) is not None:
            return failure
        outcome = "moderate" if "MODERATE" in prompt else "fail" if "FAILJOB" in prompt else "never" if "NEVER" in prompt else "succeed"
        task = _DashScopeTask(id=f"0385dc79-{self.next_id('')}", body=body, polls_left=self.running_polls, outcome=outcome)
        with self.lock:
            self.tasks[task.id] = task
        return Response(200, {"output": {"task_status": "PENDING", "task_id": task.id}, "request_id": f"4909100c-{self.next_id('')}"})

    def _poll(self, task_id: str) -> Response:
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                return Response(200, {"request_id": "r", "output": {"task_id": task_id, "task_status": "UNKNOWN"}})
            if task.status in ("PENDING", "RUNNING") and (task.polls_left > 0 or task.outcome == "never"):
                task.polls_left -= 1
                task.status = "RUNNING"
            elif task.status in ("PENDING", "RUNNING"):
                task.status = {"succeed": "SUCCEEDED"}.get(task.outcome, "FAILED")
            output: dict[str, Any] = {"task_id": task.id, "task_status": task.status, "submit_time": "2026-12-01 11:38:54.741"}
            if task.status == "FAILED":
                output["code"], output["message"] = (
                    ("DataInspectionFailed", "Output data may contain inappropriate content.")
                    if task.outcome == "moderate"
                    else ("InternalError.Algo", "An internal error occurred in the algorithm.")
                )
            ready = task.status == "SUCCEEDED" and task.url is None
        if ready:
            task.url = self._signed(self.keep(self.new_png()))
        if task.status == "SUCCEEDED":
            prompt = task.body["input"]["prompt"]
            output["results"] = [{"orig_prompt": prompt, "actual_prompt": f"{prompt}, detailed", "url": task.url}]
        return Response(200, {"request_id": "r", "output": output, "usage": {"image_count": 1 if task.url else 0}})

    def _cancel(self, task_id: str) -> Response:
        with self.lock:
            task = self.tasks.get(task_id)
            if task is not None and task.status == "PENDING":
                task.status = "CANCELED"
                return Response(200, {"request_id": "r"})
        return dashscope_error(400, "UnsupportedOperation", "Failed to cancel the task, please confirm if the task is in PENDING status.")

    @staticmethod
    def _signed(url: str) -> str:
        return f"{url}?Expires=1767225600&OSSAccessKeyId=LTAI5tFake&Signature=c2lnbmVk%3D"


# --------------------------------------------------------------------------------------------
# providers-2.md §11 Stability AI
# --------------------------------------------------------------------------------------------


def stability_error(status: int, name: str, error: str) -> Response:
    """Stability's error envelope (providers-2.md §11.1)."""
    return Response(status, {"id": "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4", "name": name, "errors": [error]})


STABILITY_RATIOS = {"16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21"}
STABILITY_STYLES = {
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance", "fantasy-art",
    "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami", "photographic",
    "pixel-art", "tile-texture",
}
STABILITY_SD3_MODELS = {"sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium"}
# The form fields each route takes, besides `prompt` and the `image` file.
STABILITY_FIELDS = {
    "ultra": {"negative_prompt", "aspect_ratio", "seed", "output_format", "strength"},
    "core": {"negative_prompt", "aspect_ratio", "seed", "output_format", "style_preset"},
    "sd3": {"negative_prompt", "aspect_ratio", "seed", "output_format", "strength", "model", "mode"},
}


def _png_side(data: bytes) -> int | None:
    """The shorter side of a PNG, or None if ``data`` is not one."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 24:
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return min(width, height)


class FakeStability(FakeServer):
    """``POST /v2beta/stable-image/generate/{ultra,core,sd3}`` (Bearer, multipart/form-data,
    ``Accept: image/*`` or ``application/json``), one image per call.

    Checks every field against its route: ratios, formats (no webp on sd3), seed range, style
    presets (core only), ``model`` and ``mode`` (sd3 only, ``mode`` matching the presence of an
    ``image`` file), ``strength`` in 0–1 exactly when an image comes (not on core), an image of
    at least 64 px per side and no ``aspect_ratio`` with it. Prompt keywords: ``FILTERED``
    (200, blurred image, ``finish-reason: CONTENT_FILTERED``), ``MODERATE`` (403
    ``content_moderation``), ``NOCREDIT`` (402), ``RATELIMIT`` (429, ``Retry-After: 60``),
    ``FAIL500``, ``GARBAGE`` (200 of HTML labelled ``image/png``) and ``SLOW`` (answers after
    3 s). :attr:`images` keeps the images it answered with, in order."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.images: list[bytes] = []

    def generate_calls(self) -> list[Recorded]:
        return self.calls("POST", prefix="/v2beta/stable-image/generate/")

    def _refuse(self, why: str) -> Response:
        self.problem(f"stability: {why}")
        return stability_error(400, "bad_request", why)

    def route(self, request: Recorded) -> Response:
        match = re.fullmatch(r"/v2beta/stable-image/generate/(ultra|core|sd3)", request.path)
        if request.method != "POST" or not match:
            self.problem(f"stability: unexpected {request.target}")
            return stability_error(404, "not_found", f"{request.path} not found")
        route = match.group(1)
        if request.headers.get("authorization") != f"Bearer {self.key}":
            self.problem("stability: request without `Authorization: Bearer <key>`")
            return stability_error(401, "unauthorized", "Missing or invalid API key")
        accept = request.headers.get("accept", "")
        if accept not in ("image/*", "application/json"):
            return self._refuse(f"accept {accept!r} is neither image/* nor application/json")
        try:
            parts = request.parts
        except ValueError as error:
            return self._refuse(f"the body is not multipart/form-data: {error}")
        names = [part.name for part in parts]
        if len(names) != len(set(names)):
            return self._refuse(f"a field is sent twice: {names}")
        files = [part for part in parts if part.is_file]
        form = request.form
        unknown = set(form) - STABILITY_FIELDS[route] - {"prompt"}
        if unknown or any(part.name != "image" for part in files):
            return self._refuse(f"{route} takes no {sorted(unknown) or [p.name for p in files]}")
        prompt = form.get("prompt", "")
        if not 1 <= len(prompt) <= 10000:
            return self._refuse(f"prompt of {len(prompt)} characters")
        if form.get("aspect_ratio", "1:1") not in STABILITY_RATIOS:
            return self._refuse(f"aspect_ratio {form['aspect_ratio']!r}")
        formats = {"png", "jpeg"} if route == "sd3" else {"png", "jpeg", "webp"}
        if form.get("output_format", "png") not in formats:
            return self._refuse(f"output_format {form['output_format']!r} on {route}")
        if "seed" in form and not (form["seed"].isdigit() and int(form["seed"]) <= 4294967294):
            return self._refuse(f"seed {form['seed']!r}")
        if form.get("style_preset", "enhance") not in STABILITY_STYLES:
            return self._refuse(f"style_preset {form['style_preset']!r}")
        image = files[0] if files else None
        if route == "sd3":
            if form.get("model", "sd3.5-large") not in STABILITY_SD3_MODELS:
                return self._refuse(f"model {form['model']!r}")
            mode = form.get("mode", "text-to-image")
            if mode != ("image-to-image" if image else "text-to-image"):
                return self._refuse(f"mode {mode!r} with{'' if image else 'out'} an image")
        if image is not None:
            side = _png_side(image.data)
            if side is None or side < 64:
                return self._refuse(f"the image is not a PNG of at least 64 px per side ({side})")
            if "aspect_ratio" in form:
                return self._refuse("aspect_ratio with an input image (the output follows the input)")
        strength = form.get("strength")
        if (strength is None) != (image is None):
            return self._refuse(f"strength {strength!r} with{'' if image else 'out'} an image")
        if strength is not None and not 0 <= float(strength) <= 1:
            return self._refuse(f"strength {strength!r}")
        return self._answer(prompt, accept, form.get("seed", "0"))

    def _answer(self, prompt: str, accept: str, seed: str) -> Response:
        if "MODERATE" in prompt:
            return stability_error(403, "content_moderation", "Your request was flagged by our content moderation system.")
        if "NOCREDIT" in prompt:
            return stability_error(402, "payment_required", "You lack sufficient credits to make this request.")
        if "RATELIMIT" in prompt:
            reply = stability_error(429, "rate_limit_exceeded", "You have exceeded the rate limit.")
            reply.headers["Retry-After"] = "60"
            return reply
        if "FAIL500" in prompt:
            return stability_error(500, "internal_error", "An unexpected server error has occurred.")
        if "GARBAGE" in prompt:
            return Response(200, b"<html>not an image</html>", content_type="image/png", headers={"finish-reason": "SUCCESS"})
        if "SLOW" in prompt:
            time.sleep(3)
        finish = "CONTENT_FILTERED" if "FILTERED" in prompt else "SUCCESS"
        png = self.new_png()
        with self.lock:
            self.images.append(png)
        headers = {"finish-reason": finish, "seed": seed, "x-request-id": self.next_id("req-")}
        if accept == "application/json":
            body = {"image": base64.b64encode(png).decode(), "finish_reason": finish, "seed": int(seed)}
            return Response(200, body, headers={"x-request-id": headers["x-request-id"]})
        return Response(200, png, content_type="image/png", headers=headers)


# --------------------------------------------------------------------------------------------
# Recraft (providers-2.md §13)
# --------------------------------------------------------------------------------------------

# Recraft's generation models and the sizes each takes (recraft.ai/docs/api-reference/appendix);
# the `_vector` ones answer SVG. A size may also be an aspect ratio `w:h`.
RECRAFT_V4_SIZES = {"1024x1024", "1536x768", "768x1536", "1280x832", "832x1280", "1216x896", "896x1216", "1152x896", "896x1152", "832x1344", "1280x896", "896x1280", "1344x768", "768x1344"}
RECRAFT_PRO_SIZES = {"2048x2048", "3072x1536", "1536x3072", "2560x1664", "1664x2560", "2432x1792", "1792x2432", "2304x1792", "1792x2304", "1664x2688", "2560x1792", "1792x2560", "2688x1536", "1536x2688"}
RECRAFT_V3_SIZES = {"1024x1024", "1365x1024", "1024x1365", "1536x1024", "1024x1536", "1820x1024", "1024x1820", "1024x2048", "2048x1024", "1434x1024", "1024x1434", "1024x1280", "1280x1024", "1024x1707", "1707x1024"}
RECRAFT_MODELS: dict[str, set[str]] = {
    **{m: RECRAFT_V4_SIZES for m in ("recraftv4_1", "recraftv4_1_vector", "recraftv4_1_utility", "recraftv4", "recraftv4_vector")},
    **{m: RECRAFT_PRO_SIZES for m in ("recraftv4_1_pro", "recraftv4_1_pro_vector", "recraftv4_pro", "recraftv4_pro_vector")},
    **{m: RECRAFT_V3_SIZES for m in ("recraftv3", "recraftv3_vector", "recraftv2", "recraftv2_vector")},
}
RECRAFT_RATIO = re.compile(r"^\d{1,2}:\d{1,2}$")
# Fields the generation endpoint does not take: OpenAI's own (§13 "What an adapter must do" 1).
RECRAFT_OPENAI_ONLY = ("quality", "output_format", "background", "moderation", "seed", "user")
RECRAFT_TOOLS = {"/v1/images/vectorize": {"response_format", "shape_stacking"}, "/v1/images/removeBackground": {"response_format"}}


def recraft_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"code": code, "message": message}, headers=headers or {})


class FakeRecraft(_ImageHost):
    """Recraft's direct API (Bearer): ``POST /v1/images/generations`` (JSON, ``n`` 1–6, URL or
    base64 results, SVG from the ``_vector`` models, ``style``/``substyle`` for V2/V3 only) and
    the tools ``POST /v1/images/vectorize`` / ``removeBackground`` (multipart, the image as the
    one ``file`` part, answered with a singular ``image``: SVG and a PNG cut-out). Results are
    served at ``/files/...``, and never to a request carrying the key.

    Prompt keywords: ``MODERATE`` (400 with an NSFW code: the moderation signal is undocumented,
    this is the shape the adapter assumes), ``RATELIMIT`` (429, ``Retry-After: 120``),
    ``FAIL500`` and ``NOCREDIT`` (402)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def generation_calls(self) -> list[Recorded]:
        return self.calls("POST", "/v1/images/generations")

    def download_calls(self) -> list[Recorded]:
        return self.calls("GET", prefix="/files/")

    def route(self, request: Recorded) -> Response:
        if request.method == "GET" and request.path.startswith("/files/") and "authorization" in request.headers:
            self.problem(f"recraft: the key was sent to the result host ({request.target})")
        if (kept := self.serve_kept(request)) is not None:
            return kept
        if request.headers.get("authorization") != f"Bearer {self.key}":
            self.problem(f"recraft: {request.target} without `Authorization: Bearer <key>`")
            return recraft_error(401, "unauthorized", "Invalid API token")
        if request.method == "POST" and request.path == "/v1/images/generations":
            return self._generate(request)
        if request.method == "POST" and request.path in RECRAFT_TOOLS:
            return self._tool(request)
        self.problem(f"recraft: unexpected {request.target}")
        return recraft_error(404, "not_found", f"No route {request.path}")

    def _generate(self, request: Recorded) -> Response:
        body, why = _json_body(self, request, "recraft")
        if body is None:
            return recraft_error(400, "invalid_request", why or "bad body")
        prompt, model = body.get("prompt"), body.get("model")
        if not isinstance(prompt, str) or not prompt:
            self.problem(f"recraft: prompt missing: {str(body)[:300]}")
            return recraft_error(400, "invalid_request", "prompt is required")
        if model not in RECRAFT_MODELS:
            self.problem(f"recraft: unknown model {model!r}")
            return recraft_error(400, "invalid_model", f"Unknown model {model}")
        for field in RECRAFT_OPENAI_ONLY:
            if field in body:
                self.problem(f"recraft: `{field}` is not a Recraft generation field")
                return recraft_error(400, "invalid_request", f"Unknown field {field}")
        if ("style" in body or "substyle" in body) and not model.startswith(("recraftv2", "recraftv3")):
            self.problem(f"recraft: style or substyle sent to {model}, which takes no style")
            return recraft_error(400, "invalid_style", "Styles are not supported for V4 models")
        size = body.get("size")
        if size is not None and size not in RECRAFT_MODELS[model] and not RECRAFT_RATIO.match(str(size)):
            self.problem(f"recraft: size {size!r} is not one of {model}'s")
            return recraft_error(400, "invalid_size", f"Invalid size {size}")
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 6:
            self.problem(f"recraft: n {n!r}")
            return recraft_error(400, "invalid_request", "n must be between 1 and 6")
        response_format = body.get("response_format", "url")
        if response_format not in ("url", "b64_json"):
            self.problem(f"recraft: response_format {response_format!r}")
            return recraft_error(400, "invalid_request", f"Invalid response_format {response_format}")
        if "MODERATE" in prompt:
            return recraft_error(400, "nsfw_prompt", "The prompt was flagged as NSFW content")
        if "RATELIMIT" in prompt:
            return recraft_error(429, "too_many_requests", "Rate limit exceeded", {"Retry-After": "120"})
        if "FAIL500" in prompt:
            return recraft_error(500, "internal_error", "Internal server error")
        if "NOCREDIT" in prompt:
            return recraft_error(402, "not_enough_credits", "Not enough API units")
        vector = model.endswith("_vector")
        results = [svg_document(len(self.images) + i) if vector else self.new_png() for i in range(n)]
        data = [self._item(result, response_format) for result in results]
        return Response(200, {"created": int(time.time()), "credits": (80 if vector else 40) * n, "data": data})

    def _item(self, result: bytes, response_format: str) -> dict[str, Any]:
        item: dict[str, Any] = {"image_id": f"b2e3d9e5-2345-4bcd-8aef-{next(self._ids):012d}"}
        if response_format == "b64_json":
            item["b64_json"] = base64.b64encode(result).decode()
        else:
            item["url"] = self.keep(result)
        return item

    def _tool(self, request: Recorded) -> Response:
        if not request.is_multipart:
            self.problem(f"recraft: {request.target} is {request.headers.get('content-type')!r}, not multipart/form-data")
            return recraft_error(400, "invalid_request", "multipart/form-data expected")
        try:
            parts = request.parts
        except ValueError as error:
            self.problem(f"recraft: unreadable form: {error}")
            return recraft_error(400, "invalid_request", f"Invalid form: {error}")
        files = request.files
        if len(files) != 1 or files[0].name != "file":
            self.problem(f"recraft: {request.target} needs one file part named `file`: {request.part_summary()}")
            return recraft_error(400, "invalid_request", "file is required")
        if not (files[0].content_type or "").startswith("image/") or not files[0].data:
            self.problem(f"recraft: the file part is {files[0].content_type!r} of {len(files[0].data)} bytes")
            return recraft_error(400, "invalid_image", "file is not an image")
        allowed = RECRAFT_TOOLS[request.path]
        fields = request.form
        if len(fields) != len(parts) - 1 or (unknown := set(fields) - allowed):
            self.problem(f"recraft: {request.target} takes one `file` and {sorted(allowed)}: {request.part_summary()}")
            return recraft_error(400, "invalid_request", "Unknown or repeated fields")
        result = svg_document(len(self.images)) if request.path.endswith("/vectorize") else self.new_png()
        image = self._item(result, fields.get("response_format", "url"))
        return Response(200, {"created": int(time.time()), "credits": 10, "image": image})


# --------------------------------------------------------------------------------------------
# Azure OpenAI (providers-2.md §10)
# --------------------------------------------------------------------------------------------

# The first dated api-version that serves the GPT image models and edits (providers-2.md §10.1).
AZURE_FIRST_IMAGE_API_VERSION = "2025-04-01-preview"
# Fields Azure's GPT image deployments do not take, or that are unverified there (§10.2).
AZURE_REFUSED_FIELDS = ("response_format", "moderation", "safety_identifier", "style")


def azure_error(status: int, code: str, message: str, **extra: Any) -> Response:
    return Response(status, {"error": {"code": code, "message": message, **extra}})


class FakeAzure(FakeServer):
    """One Azure OpenAI resource serving OpenAI's Images API for its GPT image
    ``deployments`` (their names), in both URL forms (§10.1):

    - ``POST /openai/deployments/{deployment}/images/generations|edits?api-version=...``: a
      missing or older ``api-version`` is a 404 "Resource not found";
    - ``POST /openai/v1/images/generations|edits``: the body's ``model`` names the deployment.

    The key must come as ``api-key`` and never as a bearer; an unknown deployment is a 404
    ``DeploymentNotFound``. Generations are JSON, edits multipart (``image[]``/``image``,
    optional ``mask``); both answer ``b64_json`` PNGs. Fields Azure does not take
    (:data:`AZURE_REFUSED_FIELDS`, ``output_format`` webp) are a 400. Each of these is noted in
    :attr:`problems`. Prompt keywords: ``MODERATE`` is the logged 400
    ``content_policy_violation`` refusal with its ``inner_error``; ``FILTEROUT`` the documented
    ``contentFilter`` answer for a filtered image, sent with status 200 (its status is
    unverified); ``RATELIMIT`` a 429 with ``retry-after-ms`` and ``retry-after``; ``FAIL500`` a
    500."""

    def __init__(self, key: str, deployments: set[str]) -> None:
        super().__init__()
        self.key = key
        self.deployments = deployments
        self.images: list[bytes] = []

    def image_calls(self) -> list[Recorded]:
        return self.calls("POST", prefix="/openai/")

    def route(self, request: Recorded) -> Response:
        v1 = re.fullmatch(r"/openai/v1/images/(generations|edits)", request.path)
        dated = re.fullmatch(r"/openai/deployments/([^/]+)/images/(generations|edits)", request.path)
        if request.method != "POST" or not (v1 or dated):
            self.problem(f"azure: unexpected {request.target}")
            return azure_error(404, "404", "Resource not found")
        if request.headers.get("api-key") != self.key or "authorization" in request.headers:
            self.problem(f"azure: {request.target} must carry exactly `api-key: <key>`")
            return azure_error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint.")
        if dated:
            version = (request.query.get("api-version") or [""])[0]
            if not version or version < AZURE_FIRST_IMAGE_API_VERSION:
                self.problem(f"azure: {request.target} with api-version {version!r}")
                return azure_error(404, "404", "Resource not found")
        operation = v1.group(1) if v1 else dated.group(2)
        fields, why = self._fields(request, operation)
        if fields is None:
            return azure_error(400, "invalid_payload", why or "bad body")
        deployment = dated.group(1) if dated else fields.get("model")
        if deployment not in self.deployments:
            self.problem(f"azure: {request.target} for deployment {deployment!r}, not one of {sorted(self.deployments)}")
            return azure_error(
                404, "DeploymentNotFound", "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."
            )
        for field_name in AZURE_REFUSED_FIELDS:
            if field_name in fields:
                self.problem(f"azure: `{field_name}` sent to a GPT image deployment")
                return azure_error(400, "invalid_request_error", f"Unknown parameter: '{field_name}'.", param=field_name)
        if fields.get("output_format") not in (None, "png", "jpeg"):
            self.problem(f"azure: output_format {fields['output_format']!r} (Azure makes png or jpeg)")
            return azure_error(400, "invalid_request_error", "WEBP images aren't supported.", param="output_format")
        prompt = str(fields.get("prompt") or "")
        if not prompt:
            self.problem(f"azure: {request.target} without a prompt")
            return azure_error(400, "invalid_request_error", "prompt is required", param="prompt")
        if "MODERATE" in prompt:
            return azure_error(
                400,
                "content_policy_violation",
                "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
                type="invalid_request_error",
                inner_error={
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_results": {"jailbreak": {"detected": False, "filtered": False}},
                    "revised_prompt": "a quiet meadow",
                },
            )
        if "FILTEROUT" in prompt:
            return Response(
                200,
                {"created": int(time.time()), "error": {"code": "contentFilter", "message": "Generated image was filtered as a result of our safety system."}},
            )
        if "RATELIMIT" in prompt:
            return Response(
                429,
                {"error": {"code": "429", "message": "Requests to the Images_Generations_Create Operation under Azure OpenAI API have exceeded the rate limit. Please retry after 3 seconds."}},
                headers={"retry-after": "3", "retry-after-ms": "2500"},
            )
        if "FAIL500" in prompt:
            return azure_error(500, "InternalServerError", "The service is temporarily unable to process your request.")
        try:
            n = int(fields.get("n", 1))
        except (TypeError, ValueError):
            n = 0
        if not 1 <= n <= 10:
            self.problem(f"azure: n {fields.get('n')!r}")
            return azure_error(400, "invalid_request_error", "n must be between 1 and 10", param="n")
        data = []
        for _ in range(n):
            png = self.new_png()
            with self.lock:
                self.images.append(png)
            data.append({"b64_json": base64.b64encode(png).decode()})
        return Response(200, {"created": int(time.time()), "data": data})

    def _fields(self, request: Recorded, operation: str) -> tuple[dict[str, Any] | None, str | None]:
        """The request's fields: the JSON body of a generation, the text parts of an edit
        (whose image parts are checked here); (None, why not) after noting the problem."""
        if operation == "generations":
            return _json_body(self, request, "azure")
        if not request.is_multipart:
            why = f"azure: {request.target} is not multipart/form-data"
            self.problem(why)
            return None, why
        images = request.parts_named("image[]") + request.parts_named("image")
        if not images or not all(part.is_file and part.data[:8] == b"\x89PNG\r\n\x1a\n" for part in images):
            why = f"azure: edits need PNG `image[]` file parts: {request.part_summary()}"
            self.problem(why)
            return None, why
        masks = request.parts_named("mask")
        if masks and not (len(masks) == 1 and masks[0].is_file and masks[0].data[:4] == b"\x89PNG"):
            why = f"azure: the mask must be one PNG file part: {request.part_summary()}"
            self.problem(why)
            return None, why
        return dict(request.form), None


# --------------------------------------------------------------------------------------------
# Reference images
# --------------------------------------------------------------------------------------------

HTML_PAGE = b"<!doctype html><html><head><title>Not an image</title></head><body><h1>Hello</h1></body></html>\n"


class FakeFiles(FakeServer):
    """A static server for reference images. Default files:

    - ``/ref-a.png``, ``/ref-b.png``, ``/x.png``: small distinct PNGs (``image/png``);
    - ``/page.html``: an HTML page (``text/html``);
    - ``/big.png``: a ~30 kB noise PNG with Content-Length, ``/big-chunked.png``: the same,
      chunked without Content-Length;
    - ``/redirect?to=<url>``: 302 to ``<url>``.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        big = noise_png(100, seed=7)
        self.files: dict[str, Response] = {
            "/ref-a.png": Response(200, solid_png(1001), content_type="image/png"),
            "/ref-b.png": Response(200, solid_png(1002), content_type="image/png"),
            "/x.png": Response(200, solid_png(1003), content_type="image/png"),
            "/page.html": Response(200, HTML_PAGE, content_type="text/html; charset=utf-8"),
            "/big.png": Response(200, big, content_type="image/png"),
            "/big-chunked.png": Response(200, big, content_type="image/png", chunked=True),
        }

    def bytes_of(self, path: str) -> bytes:
        return self.files[path].body

    def link(self, path: str) -> str:
        return f"{self.url}{path}"

    def gets(self) -> list[str]:
        return [r.path for r in self.calls("GET")]

    def route(self, request: Recorded) -> Response:
        if request.method in ("GET", "HEAD") and request.path == "/redirect":
            target = (request.query.get("to") or [""])[0]
            return Response(302, b"", content_type="text/plain", headers={"Location": target})
        if request.method in ("GET", "HEAD") and request.path in self.files:
            return self.files[request.path]
        return Response(404, "not found")


if __name__ == "__main__":  # a manual check: python tests/e2e/fake_upstreams.py
    fakes = [FakeGemini("g"), FakeReplicate("r"), FakeXai("x"), FakeBfl("b"), FakeFal("f"), FakeTogether("t"), FakeStability("s"), FakeAzure("a", {"gpt-image-2"}), FakeFiles()]
    for fake in fakes:
        fake.start()
        print(f"{type(fake).__name__} at {fake.url}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
