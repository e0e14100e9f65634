"""A webhook receiver for the end-to-end tests of asynchronous tasks, and the Standard Webhooks
signature check (https://www.standardwebhooks.com/).

The receiver listens on a loopback port chosen when it is made (so a server can be told to
allow it with ``IMGPROXY_FETCH_ALLOW_HOSTS`` before it listens), records every POST it gets
(arrival time, headers, body, the status it answered) and answers as a test says: a queue of
statuses (:meth:`WebhookReceiver.then`), else 200. It can be stopped and started again on the
same port, to play a receiver that is down for a while. Only the standard library is used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from helpers import free_port


@dataclass
class Delivery:
    """One POST the receiver got."""

    at: float  # time.monotonic() when it arrived
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    answered: int  # the status the receiver answered with

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def accepted(self) -> bool:
        return 200 <= self.answered < 300

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")


class WebhookReceiver:
    """A threaded HTTP receiver of webhooks on ``127.0.0.1:<port>``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._plan: deque[int] = deque()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> "WebhookReceiver":
        """Starts listening (again) on the receiver's port."""
        assert self._server is None, "the receiver is already running"
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler_class())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops listening: connections to the port are refused until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "WebhookReceiver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``, for IMGPROXY_FETCH_ALLOW_HOSTS."""
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # -- behaviour ------------------------------------------------------------------------

    def then(self, *statuses: int) -> None:
        """Answer the next POSTs with ``statuses``, one each, then 200 again."""
        with self._lock:
            self._plan.extend(statuses)

    # -- what was received ----------------------------------------------------------------

    def received(self, path: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if path is None or d.path == path]

    def accepted(self, path: str | None = None) -> list[Delivery]:
        return [d for d in self.received(path) if d.accepted]

    def wait_accepted(self, count: int, timeout: float, path: str | None = None) -> list[Delivery]:
        """The accepted deliveries once there are at least ``count`` (AssertionError if not
        within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            accepted = self.accepted(path)
            if len(accepted) >= count:
                return accepted
            if time.monotonic() > deadline:
                got = [(d.path, d.answered, d.webhook_id) for d in self.received()]
                raise AssertionError(f"expected {count} accepted webhook(s) within {timeout}s; received {got}")
            time.sleep(0.02)

    # -- serving --------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver._lock:
                    status = receiver._plan.popleft() if receiver._plan else 200
                    receiver.deliveries.append(
                        Delivery(
                            at=time.monotonic(),
                            path=self.path,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                            answered=status,
                        )
                    )
                payload = b'{"ok": true}' if 200 <= status < 300 else b'{"error": "not now"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


# --------------------------------------------------------------------------------------------
# Standard Webhooks
# --------------------------------------------------------------------------------------------


def expected_signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """``v1,`` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), the key being the
    base64-decoded part of the secret after ``whsec_``."""
    assert secret.startswith("whsec_"), f"a Standard Webhooks secret starts with whsec_: {secret!r}"
    key = base64.b64decode(secret[len("whsec_") :], validate=True)
    assert len(key) >= 16, f"the webhook secret's key is only {len(key)} bytes"
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, delivery: Delivery, tolerance: float = 300.0) -> None:
    """Checks a delivery as a Standard Webhooks receiver would: the three headers present, the
    timestamp recent, and one of the space-separated ``v1,`` signatures matching the body.
    Raises AssertionError with what is wrong."""
    headers = delivery.headers
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert headers.get(name), f"missing `{name}` header: {headers}"
    timestamp = headers["webhook-timestamp"]
    assert timestamp.isdigit(), f"webhook-timestamp is not unix seconds: {timestamp!r}"
    skew = abs(time.time() - int(timestamp))
    assert skew <= tolerance, f"webhook-timestamp {timestamp} is {skew:.0f}s away from now"
    want = expected_signature(secret, headers["webhook-id"], timestamp, delivery.body)
    given = headers["webhook-signature"].split()
    assert any(hmac.compare_digest(want, sig) for sig in given), (
        f"no webhook-signature matches: got {given}, expected {want}"
    )
