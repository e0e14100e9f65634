"""A small fake of OpenAI's image API, for end-to-end tests of imgproxy's OpenAI adapter.

It listens on a free loopback port, records every request it receives (method, path, headers,
raw body, parsed JSON) and answers ``POST .../images/generations`` with real PNG images, or with
whatever response a test configured (an error envelope with any status, a Retry-After header, a
delay). Only the standard library is used.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

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


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class FakeOpenAI:
    """A threaded fake OpenAI upstream.

    By default ``POST */images/generations`` answers 200 with ``n`` distinct PNGs (as
    ``b64_json``, ``n`` taken from the request body) and :data:`DEFAULT_USAGE`. Tests change that
    with :meth:`always` (every later request) or :meth:`then` (queued, one request each).
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.images: list[bytes] = []  # every image the fake has sent, in order
        self.usage: dict[str, Any] = dict(DEFAULT_USAGE)
        self._lock = threading.Lock()
        self._queued: deque[Reply] = deque()
        self._always: Reply | None = None
        self._delay = 0.0
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

    def then(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, one each, before the default."""
        with self._lock:
            self._queued.extend(replies)

    def delay_images(self, seconds: float) -> None:
        """Wait ``seconds`` before answering generated-image replies."""
        self._delay = seconds

    def image_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/images/generations")]

    # -- serving --------------------------------------------------------------------------

    def _next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            if self._queued:
                return self._queued.popleft()
            if self._always is not None:
                return self._always
        if request.method != "POST" or not request.path.endswith("/images/generations"):
            return error_reply(404, f"Invalid URL ({request.method} {request.path})")
        try:
            body = request.json
        except ValueError:
            return error_reply(400, "We could not parse the JSON body of your request.")
        n = body.get("n") or 1
        images = []
        with self._lock:
            for _ in range(int(n)):
                png = solid_png(len(self.images))
                self.images.append(png)
                images.append(png)
        return Reply(
            status=200,
            body={
                "created": int(time.time()),
                "background": "opaque",
                "data": [{"b64_json": base64.b64encode(png).decode()} for png in images],
                "output_format": "png",
                "quality": "medium",
                "size": "1024x1024",
                "usage": self.usage,
            },
            delay=self._delay,
        )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep pytest output clean

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with fake._lock:
                    fake.requests.append(recorded)
                reply = fake._next_reply(recorded)
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
