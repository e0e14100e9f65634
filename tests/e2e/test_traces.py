"""OpenTelemetry trace export, against a local OTLP/HTTP receiver started by the test.

The server exports only when the standard ``OTEL_*`` variables ask for it; each request is a
server span in the HTTP conventions with children for validation, each upstream call (in the
GenAI conventions' words) and the store write; a caller's W3C ``traceparent`` is continued; the
last spans are flushed on a graceful stop; no key and no prompt is ever in a span.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import openai
import pytest
from conftest import ImgproxyFactory
from helpers import client

MASTER_KEY = "mk-traces-0123456789abcdef"
PROMPT = "a brass orrery on a desk, secret-prompt-7f3a"
SERVER, CLIENT = 2, 3  # OTLP span kinds
KIND_NAMES = {"SPAN_KIND_SERVER": SERVER, "SPAN_KIND_CLIENT": CLIENT}


class OtlpReceiver:
    """A minimal OTLP/HTTP collector on loopback: keeps every ``POST /v1/traces`` it gets."""

    def __init__(self, port: int = 0) -> None:
        self.bodies: list[tuple[str, bytes]] = []  # (content type, body)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.bodies.append((self.headers.get("Content-Type", ""), body))
                answer = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.bodies)

    def spans(self) -> list[dict[str, Any]]:
        """Every span received (OTLP/JSON), with its resource's attributes under ``resource``."""
        spans = []
        for content_type, body in self.received():
            assert content_type.startswith("application/json"), content_type
            for resource_spans in json.loads(body)["resourceSpans"]:
                resource = attributes(resource_spans.get("resource", {}))
                for scope_spans in resource_spans.get("scopeSpans", []):
                    for span in scope_spans.get("spans", []):
                        spans.append({**span, "resource": resource, "attrs": attributes(span)})
        return spans

    def wait_for(self, found: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if found(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)


def attributes(holder: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON ``attributes`` as a plain dict (int64 values may come as strings)."""
    values = {}
    for attribute in holder.get("attributes", []):
        value = attribute["value"]
        if "intValue" in value:
            values[attribute["key"]] = int(value["intValue"])
        else:
            values[attribute["key"]] = next(iter(value.values()), None)
    return values


def kind(span: dict[str, Any]) -> int:
    value = span.get("kind")
    return KIND_NAMES.get(value, value) if isinstance(value, str) else value


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


def traced_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    return {
        "IMGPROXY_MASTER_KEY": MASTER_KEY,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        **extra,
    }


def ancestors(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    while (parent := by_id.get(span.get("parentSpanId", ""))) is not None:
        yield parent
        span = parent


def test_a_generation_is_one_trace_from_the_request_span_to_the_upstream_call_and_flushed_at_stop(
    imgproxy: ImgproxyFactory, receiver: OtlpReceiver
) -> None:
    # A schedule delay longer than the test: the spans can only arrive by the flush at stop.
    server = imgproxy.start(traced_env(receiver, OTEL_BSP_SCHEDULE_DELAY="600000"))
    sdk = client(server.url, api_key=MASTER_KEY)
    response = sdk.images.generate(model="placeholder", prompt=PROMPT, size="256x256", response_format="b64_json")
    request_id = response._request_id
    assert request_id, "the server returns x-request-id"
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    continued = sdk.images.generate(
        model="placeholder",
        prompt=PROMPT + " again",
        size="256x256",
        extra_headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
    )
    time.sleep(0.3)
    assert receiver.received() == [], "nothing is exported before the schedule delay or the stop"

    server.stop()
    spans = receiver.spans()
    assert spans, f"no span reached the receiver at stop; log:\n{server.log()}"
    by_id = {span["spanId"]: span for span in spans}

    requests = [s for s in spans if s["attrs"].get("imgproxy.request_id") == request_id]
    assert len(requests) == 1, [s["name"] for s in spans]
    request = requests[0]
    assert request["name"] == "POST /v1/images/generations", request
    assert kind(request) == SERVER, request
    assert request["attrs"]["http.request.method"] == "POST"
    assert request["attrs"]["http.route"] == "/v1/images/generations"
    assert request["attrs"]["http.response.status_code"] == 200
    assert request["resource"]["service.name"] == "imgproxy", request["resource"]
    assert not request.get("parentSpanId"), "without a traceparent the request span is a root"

    in_trace = [s for s in spans if s["traceId"] == request["traceId"] and s is not request]
    assert all(request in ancestors(s, by_id) for s in in_trace), "every span of the trace descends from the request"
    names = sorted(s["name"] for s in in_trace)
    assert names == ["generate_image placeholder", "store_images", "validate"], names
    upstream = next(s for s in in_trace if s["name"] == "generate_image placeholder")
    assert kind(upstream) == CLIENT, upstream
    assert {k: upstream["attrs"].get(k) for k in (
        "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.output.type",
        "gen_ai.request.choice.count", "imgproxy.model", "imgproxy.call.first_index",
    )} == {
        "gen_ai.operation.name": "generate_image",
        "gen_ai.provider.name": "placeholder",
        "gen_ai.request.model": "placeholder",
        "gen_ai.output.type": "image",
        "gen_ai.request.choice.count": 1,
        "imgproxy.model": "placeholder",
        "imgproxy.call.first_index": 0,
    }, upstream["attrs"]
    store = next(s for s in in_trace if s["name"] == "store_images")
    assert store["attrs"]["imgproxy.images"] == 1 and store["attrs"]["imgproxy.store"] == "fs", store

    # The caller's trace is continued: the second request's span is its child.
    [second] = [s for s in spans if s["attrs"].get("imgproxy.request_id") == continued._request_id]
    assert (second["traceId"], second["parentSpanId"]) == (caller_trace, caller_span), second
    assert any(s["traceId"] == caller_trace and s["name"].startswith("generate_image") for s in spans)

    exported = b"".join(body for _, body in receiver.received()).decode()
    assert MASTER_KEY not in exported, "the master key is in a span"
    assert "orrery" not in exported and "secret-prompt" not in exported, "the prompt is in a span"


def test_a_failed_request_is_a_span_with_its_status_and_no_upstream_call(
    imgproxy: ImgproxyFactory, receiver: OtlpReceiver
) -> None:
    server = imgproxy.start(traced_env(receiver, OTEL_BSP_SCHEDULE_DELAY="50"))
    with pytest.raises(openai.BadRequestError):
        client(server.url, api_key=MASTER_KEY).images.generate(model="placeholder", prompt=PROMPT, size="7x7")
    spans = receiver.wait_for(lambda spans: any(s["attrs"].get("http.response.status_code") == 400 for s in spans))
    [request] = [s for s in spans if s["attrs"].get("http.response.status_code") == 400]
    assert request["name"] == "POST /v1/images/generations"
    # A caller's mistake leaves the server span's status unset (HTTP server conventions).
    assert request.get("status", {}).get("code") in (None, 0, "STATUS_CODE_UNSET"), request
    in_trace = [s["name"] for s in spans if s["traceId"] == request["traceId"] and s is not request]
    assert in_trace == ["validate"], in_trace


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"OTEL_SERVICE_NAME": "not-enough-to-export"}, "no OTEL_EXPORTER_OTLP_ENDPOINT set"),
        ({"OTEL_SDK_DISABLED": "true", "USE_RECEIVER": "1"}, "OTEL_SDK_DISABLED is true"),
        ({"OTEL_TRACES_EXPORTER": "none", "USE_RECEIVER": "1"}, "OTEL_TRACES_EXPORTER is none"),
    ],
)
def test_without_otel_settings_nothing_is_exported_and_one_line_says_so(
    imgproxy: ImgproxyFactory, env: dict[str, str], reason: str
) -> None:
    # The standard's default endpoint, when it is free: an exporter on by mistake would go there.
    try:
        receiver = OtlpReceiver(4318)
    except OSError:
        receiver = OtlpReceiver()
    try:
        env = dict(env)
        if env.pop("USE_RECEIVER", None):
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
            env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/json"
        env["OTEL_BSP_SCHEDULE_DELAY"] = "50"
        server = imgproxy.start(env)
        client(server.url).images.generate(model="placeholder", prompt=PROMPT, size="256x256")
        time.sleep(0.5)
        server.stop()
        assert receiver.received() == []
    finally:
        receiver.close()
    # (The data dir's path holds this test's name: it is no mention of traces.)
    lines = server.log().replace(str(server.data_dir), "DATA_DIR").splitlines()[1:]
    about_traces = [line for line in lines if any(w in line.lower() for w in ("trace", "otel", "otlp", "opentelemetry"))]
    assert len(about_traces) == 1 and f"trace export off: {reason}" in about_traces[0], about_traces


def test_the_default_protocol_is_http_protobuf(imgproxy: ImgproxyFactory, receiver: OtlpReceiver) -> None:
    server = imgproxy.start({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.url}/v1/traces"})
    client(server.url).images.generate(model="placeholder", prompt=PROMPT, size="256x256")
    server.stop()
    received = receiver.received()
    assert received and all(ct == "application/x-protobuf" and body for ct, body in received), received[:1]
    assert all(PROMPT.encode() not in body for _, body in received)


@pytest.mark.parametrize(
    ("name", "value"),
    [("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_TRACES_EXPORTER", "zipkin"), ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")],
)
def test_a_setting_trace_export_cannot_follow_stops_the_start_with_its_name(
    imgproxy: ImgproxyFactory, receiver: OtlpReceiver, name: str, value: str
) -> None:
    server = imgproxy.start({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, name: value}, wait=False)
    assert server.proc is not None
    assert server.proc.wait(timeout=30) != 0
    server.exit_code = server.proc.returncode  # stopped already: nothing for the fixture to stop
    assert f"{name}=`{value}`" in server.log(), server.log()
