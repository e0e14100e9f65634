"""Failover that cannot bill an image twice (issue 14), against the real binary and fake
upstreams that count what they receive.

Checked: a provider refusing connections falls back to the configured chain (the response, its
headers and the ledger name the model that served, charged at its price); a 429 with a short
``Retry-After`` is retried on the same provider; a 500 or a timeout from a synchronous upstream
and a moderation refusal end the request with one upstream call and nothing charged; a Replicate poll
that times out on our side is polled again, never resubmitted; five pre-start failures open a
provider's circuit (skipped uncalled, visible in ``/readyz`` and ``/metrics``) until one probe
after the cool-down closes it; a stream falls back only before any event went out; the official
SDK passes ``models`` / ``provider`` through ``extra_body``.
"""

from __future__ import annotations

import base64
import itertools
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server
from fake_openai import FakeOpenAI, StreamPlan, error_reply, moderation_blocked, rate_limited, server_error
from fake_upstreams import FakeGemini, FakeReplicate
from helpers import assert_error_envelope, client, free_port, http
from test_credits import MASTER_KEY, balance, bearer, create_key
from test_operate import scrape, value

GEMINI_KEY = "gm-failover-e2e-key-0123456789"
REPLICATE_TOKEN = "r8_failover_e2e_token_0123456789"
GENERATIONS = "/v1/images/generations"

# imgproxy-core/catalog: nano-banana-pro on Gemini costs 134 credits per 1K image; gpt-image-2
# 211 at its default quality (auto), 6 at quality=low.
NANO_BANANA_PRO = 134
GPT_AUTO = 211
GPT_LOW = 6

FALLBACK_TO_GEMINI = '[fallbacks]\n"gpt-image-2" = ["nano-banana-pro"]\n'

_PROMPTS = itertools.count()


def fresh_prompt(text: str) -> str:
    """A prompt never sent before: identical requests would be answered from the cache."""
    return f"{text} #{next(_PROMPTS)} {time.monotonic_ns()}"


# ------------------------------------------------------------------------------------------
# fixtures and helpers
# ------------------------------------------------------------------------------------------


@pytest.fixture
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(GEMINI_KEY) as fake:
        yield fake


@pytest.fixture
def replicate() -> Iterator[FakeReplicate]:
    with FakeReplicate(REPLICATE_TOKEN) as fake:
        yield fake


def refused_url() -> str:
    """An OpenAI base URL on a loopback port nobody listens on: connections are refused."""
    return f"http://127.0.0.1:{free_port()}/v1"


def start(
    imgproxy: ImgproxyFactory,
    tmp_path: Path,
    *,
    openai_url: str | None = None,
    gemini: FakeGemini | None = None,
    replicate: FakeReplicate | None = None,
    config: str = "",
    extra: dict[str, str] | None = None,
) -> Server:
    """A metered server (master key set) with OpenAI at ``openai_url`` and the given fakes,
    started with ``config`` as its config file."""
    env = {"IMGPROXY_MASTER_KEY": MASTER_KEY}
    if openai_url:
        env.update({"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": openai_url})
    if gemini:
        env.update({"GEMINI_API_KEY": GEMINI_KEY, "GEMINI_BASE_URL": gemini.url})
    if replicate:
        env.update({"REPLICATE_API_TOKEN": REPLICATE_TOKEN, "REPLICATE_BASE_URL": replicate.url})
    env.update(extra or {})
    path = tmp_path / f"failover-{next(_PROMPTS)}.toml"
    path.write_text(config)
    return imgproxy.start(env, args=["--config", str(path)])


def generate(server: Server, secret: str, timeout: float = 60.0, **fields: Any) -> tuple[int, dict[str, str], bytes]:
    body = {"model": "gpt-image-2", "prompt": fresh_prompt("a lighthouse in a storm"), **fields}
    return http("POST", f"{server.url}{GENERATIONS}", json_body=body, headers=bearer(secret), timeout=timeout)


def only_image(raw: bytes) -> bytes:
    body = json.loads(raw)
    assert len(body["data"]) == 1, body
    return base64.b64decode(body["data"][0]["b64_json"], validate=True)


def settle_rows(server: Server, key_id: str) -> list[dict[str, Any]]:
    """The key's settle rows, oldest first: amount, model and the parsed ``inputs``."""
    path = server.data_dir / "imgproxy.db"
    with sqlite3.connect(f"file:{path}", uri=True, timeout=30) as db:
        rows = db.execute(
            "SELECT amount, model, inputs FROM ledger WHERE key_id = ? AND kind = 'settle' ORDER BY id", (key_id,)
        ).fetchall()
    return [{"amount": amount, "model": model, "inputs": json.loads(inputs) if inputs else None} for amount, model, inputs in rows]


def ledger_kinds(server: Server, key_id: str) -> list[tuple[str, int]]:
    path = server.data_dir / "imgproxy.db"
    with sqlite3.connect(f"file:{path}", uri=True, timeout=30) as db:
        return [(k, int(a)) for k, a in db.execute("SELECT kind, amount FROM ledger WHERE key_id = ? ORDER BY id", (key_id,))]


def readyz_circuits(server: Server) -> dict[str, str]:
    status, _, raw = http("GET", f"{server.url}/readyz")
    assert status == 200, f"/readyz -> {status}: {raw[:300]!r} (an open circuit must not make the instance unready)"
    return json.loads(raw)["circuits"]


def sse_events(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) of every event of an event-stream body."""
    events = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            text = "\n".join(data)
            events.append((name, text if text == "[DONE]" else json.loads(text)))
    return events


# ------------------------------------------------------------------------------------------
# 1. fallback across providers
# ------------------------------------------------------------------------------------------


def test_openai_refusing_connections_falls_back_to_gemini_and_is_charged_at_gemini_price(
    imgproxy: ImgproxyFactory, tmp_path: Path, gemini: FakeGemini
) -> None:
    server = start(imgproxy, tmp_path, openai_url=refused_url(), gemini=gemini, config=FALLBACK_TO_GEMINI)
    key, secret = create_key(server, credits=1000)
    before = scrape(server)

    status, headers, raw = generate(server, secret)

    assert status == 200, f"expected the fallback's image, got {status}: {raw[:500]!r}"
    body = json.loads(raw)
    assert body.get("model") == "nano-banana-pro", f"the body must name the model that served: {body.get('model')!r}"
    assert headers.get("x-model") == "nano-banana-pro", headers
    assert headers.get("x-fallbacks") == "1", headers
    assert headers.get("x-upstream-attempts") == "2", headers
    assert len(gemini.generate_calls()) == 1, gemini.summary()
    assert only_image(raw) == gemini.final_images[0], "the image is not Gemini's"
    assert gemini.problems == [], gemini.problems

    assert body.get("credits_used") == NANO_BANANA_PRO, body.get("credits_used")
    assert balance(server, secret) == 1000 - NANO_BANANA_PRO
    (settle,) = settle_rows(server, key["id"])
    assert settle["model"] == "nano-banana-pro", settle
    attempts = settle["inputs"]["attempts"]
    assert [(a["provider"], a["model"]) for a in attempts] == [("openai", "gpt-image-2"), ("gemini", "nano-banana-pro")], attempts
    assert attempts[0]["outcome"] != "ok" and attempts[1]["outcome"] == "ok", attempts
    assert all(isinstance(a["duration_ms"], int) and a["duration_ms"] >= 0 for a in attempts), attempts
    # Reserved for the dearest candidate, settled at the served model's price.
    kinds = ledger_kinds(server, key["id"])
    reserves = [amount for kind, amount in kinds if kind == "reserve"]
    assert reserves == [-GPT_AUTO], f"the reservation is the dearest candidate's price (gpt-image-2's): {kinds}"
    assert settle["amount"] == GPT_AUTO - NANO_BANANA_PRO, f"the settle returns the difference: {kinds}"

    after = scrape(server)
    moved = sum(v for (name, labels), v in after.items() if name == "imgproxy_fallbacks_total" and ("provider", "openai") in labels)
    moved_before = sum(v for (name, labels), v in before.items() if name == "imgproxy_fallbacks_total" and ("provider", "openai") in labels)
    assert moved - moved_before == 1, [k for k in after if k[0].startswith("imgproxy_fallbacks")]


# ------------------------------------------------------------------------------------------
# 2. retries, and the failures that must not be retried
# ------------------------------------------------------------------------------------------


def test_429_with_retry_after_1_is_retried_once_on_the_same_provider_and_charged_once(
    imgproxy: ImgproxyFactory, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    server = start(imgproxy, tmp_path, openai_url=f"{fake_openai.url}/v1")
    key, secret = create_key(server, credits=100)
    fake_openai.then(rate_limited(retry_after=1))
    before = scrape(server)

    started = time.monotonic()
    status, headers, raw = generate(server, secret, quality="low", size="1024x1024")
    took = time.monotonic() - started

    assert status == 200, raw[:500]
    assert len(fake_openai.image_requests()) == 2, "one 429, then one retry"
    assert took >= 0.9, f"the retry did not wait for Retry-After: 1 ({took:.2f}s)"
    assert headers.get("x-upstream-attempts") == "2", headers
    assert headers.get("x-fallbacks") == "0", headers
    assert headers.get("x-model") == "gpt-image-2", headers
    assert only_image(raw) == fake_openai.images[-1]
    assert json.loads(raw).get("credits_used") == GPT_LOW
    assert balance(server, secret) == 100 - GPT_LOW
    (settle,) = settle_rows(server, key["id"])
    assert [a["outcome"] for a in settle["inputs"]["attempts"]][-1] == "ok", settle
    assert len(settle["inputs"]["attempts"]) == 2, settle
    assert value(scrape(server), "imgproxy_upstream_retries_total", provider="openai") - value(
        before, "imgproxy_upstream_retries_total", provider="openai"
    ) == 1


# A synchronous upstream's 500 or timeout may have started work: neither is retried nor falls
# back, and the request is refunded. Each: extra config, how the fake fails, the status, what.
SYNCHRONOUS_FAILURES = {
    "500": ("", lambda fake: fake.then(server_error()), 502, "a 500"),
    "timeout": ("[providers.openai]\ntimeout_secs = 1\n", lambda fake: fake.delay_images(2.5), 504, "a timeout"),
}


@pytest.mark.parametrize("failure", SYNCHRONOUS_FAILURES)
def test_a_failure_of_a_synchronous_upstream_is_not_retried_nor_fallen_back_and_is_refunded(
    imgproxy: ImgproxyFactory, tmp_path: Path, fake_openai: FakeOpenAI, gemini: FakeGemini, failure: str
) -> None:
    extra_config, fail, expected_status, what = SYNCHRONOUS_FAILURES[failure]
    config = FALLBACK_TO_GEMINI + extra_config
    server = start(imgproxy, tmp_path, openai_url=f"{fake_openai.url}/v1", gemini=gemini, config=config)
    key, secret = create_key(server, credits=1000)
    fail(fake_openai)

    status, headers, raw = generate(server, secret)

    assert_error_envelope(status, headers, raw, expected_status=expected_status)
    assert len(fake_openai.image_requests()) == 1, f"{what} may have started work: no second call"
    assert gemini.requests == [], f"no fallback after {what}: {gemini.summary()}"
    assert balance(server, secret) == 1000, "a failed request is refunded"
    assert settle_rows(server, key["id"]) == []


def test_a_moderation_refusal_does_not_fall_back(
    imgproxy: ImgproxyFactory, tmp_path: Path, fake_openai: FakeOpenAI, gemini: FakeGemini
) -> None:
    server = start(imgproxy, tmp_path, openai_url=f"{fake_openai.url}/v1", gemini=gemini, config=FALLBACK_TO_GEMINI)
    _, secret = create_key(server, credits=1000)
    fake_openai.then(moderation_blocked())

    status, headers, raw = generate(server, secret)

    assert_error_envelope(status, headers, raw, expected_status=400, code="moderation_blocked")
    assert len(fake_openai.image_requests()) == 1
    assert gemini.requests == [], f"a moderation refusal must not go to another provider: {gemini.summary()}"
    assert balance(server, secret) == 1000


# ------------------------------------------------------------------------------------------
# 3. an asynchronous upstream is polled, never resubmitted
# ------------------------------------------------------------------------------------------


def test_a_replicate_poll_that_times_out_is_polled_again_not_resubmitted(
    imgproxy: ImgproxyFactory, tmp_path: Path, replicate: FakeReplicate
) -> None:
    server = start(imgproxy, tmp_path, replicate=replicate, config="[providers.replicate]\ntimeout_secs = 1\n")
    _, secret = create_key(server, credits=1000)
    replicate.poll_delays = [2.5]  # the first poll outlives the 1 s HTTP timeout

    status, headers, raw = generate(server, secret, model="ultra")

    assert status == 200, raw[:500]
    assert len(replicate.create_calls()) == 1, f"one prediction, never a second: {replicate.summary()}"
    assert len(replicate.poll_calls()) >= 2, f"the timed-out poll must be followed by another: {replicate.summary()}"
    assert replicate.calls("POST", prefix="/v1/predictions/") == [], f"the prediction was cancelled: {replicate.summary()}"
    assert "timed out" in server.log(), "the first poll should have timed out on our side"
    assert headers.get("x-upstream-attempts") == "1", headers
    assert only_image(raw) == replicate.outputs[0]
    assert replicate.problems == [], replicate.problems


# ------------------------------------------------------------------------------------------
# 4. circuit breakers
# ------------------------------------------------------------------------------------------


def test_five_pre_start_failures_open_the_circuit_and_one_probe_after_the_cool_down_closes_it(
    imgproxy: ImgproxyFactory, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    server = start(
        imgproxy,
        tmp_path,
        openai_url=f"{fake_openai.url}/v1",
        extra={"IMGPROXY_BREAKER_FAILURES": "5", "IMGPROXY_BREAKER_COOLDOWN_SECS": "2"},
    )
    _, secret = create_key(server, credits=1000)
    fake_openai.always(error_reply(429, "Rate limit reached.", type="requests", code="rate_limit_exceeded"))

    for attempt in range(5):
        status, _, raw = generate(server, secret, quality="low")
        assert status == 429, f"request {attempt + 1}: {status} {raw[:300]!r}"
        assert len(fake_openai.image_requests()) == attempt + 1, "a 429 without Retry-After is not retried"
    assert readyz_circuits(server) == {"openai": "open"}
    assert value(scrape(server), "imgproxy_circuit_state", provider="openai") == 1

    status, headers, raw = generate(server, secret, quality="low")
    assert_error_envelope(status, headers, raw, expected_status=503, code="circuit_open")
    status, headers, raw = generate(server, secret, quality="low")
    assert_error_envelope(status, headers, raw, expected_status=503, code="circuit_open")
    assert len(fake_openai.image_requests()) == 5, "an open circuit skips its provider without calling it"
    assert balance(server, secret) == 1000

    time.sleep(2.2)
    fake_openai.always(None)
    status, headers, raw = generate(server, secret, quality="low")
    assert status == 200, f"the probe after the cool-down: {status} {raw[:300]!r}"
    assert len(fake_openai.image_requests()) == 6, "exactly one probe"
    assert readyz_circuits(server) == {}, "a successful probe closes the circuit"
    assert value(scrape(server), "imgproxy_circuit_state", provider="openai") == 0
    status, _, raw = generate(server, secret, quality="low")
    assert status == 200, raw[:300]
    assert balance(server, secret) == 1000 - 2 * GPT_LOW


# ------------------------------------------------------------------------------------------
# 5. streams
# ------------------------------------------------------------------------------------------


def test_a_stream_whose_upstream_fails_before_the_first_event_falls_back(
    imgproxy: ImgproxyFactory, tmp_path: Path, fake_openai: FakeOpenAI, gemini: FakeGemini
) -> None:
    server = start(imgproxy, tmp_path, openai_url=f"{fake_openai.url}/v1", gemini=gemini, config=FALLBACK_TO_GEMINI)
    _, secret = create_key(server, credits=1000)
    fake_openai.then(error_reply(429, "Rate limit reached.", type="requests", code="rate_limit_exceeded"))

    status, headers, raw = generate(server, secret, stream=True)

    assert status == 200, raw[:500]
    assert headers.get("content-type", "").startswith("text/event-stream"), headers
    events = sse_events(raw)
    completed = [data for name, data in events if name and name.endswith(".completed")]
    assert len(completed) == 1, events
    assert base64.b64decode(completed[0]["b64_json"]) == gemini.final_images[0], "the streamed image is not Gemini's"
    assert not [name for name, _ in events if name == "error"], events
    assert len(fake_openai.image_requests()) == 1 and len(gemini.generate_calls()) == 1
    assert balance(server, secret) == 1000 - NANO_BANANA_PRO


def test_a_stream_that_fails_after_a_partial_image_does_not_fall_back(
    imgproxy: ImgproxyFactory, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    # Both models stream partial images, so the fallback could take the request. The fake's
    # mid-stream failure is an error event, which imgproxy reads as the upstream's own failure
    # (not a pre-start one): this checks the outcome, not the "a partial went out" rule alone.
    server = start(
        imgproxy, tmp_path, openai_url=f"{fake_openai.url}/v1", config='[fallbacks]\n"gpt-image-2" = ["gpt-image-1.5"]\n'
    )
    _, secret = create_key(server, credits=1000)
    fake_openai.then(StreamPlan(fail_after=1))

    status, headers, raw = generate(server, secret, stream=True, partial_images=1)

    assert status == 200, raw[:500]
    events = sse_events(raw)
    names = [name for name, _ in events]
    assert names and names[0] and names[0].endswith(".partial_image"), names
    assert "error" in names or any(isinstance(d, dict) and "error" in d for _, d in events), events
    assert not [n for n in names if n and n.endswith(".completed")], names
    assert [r.field("model") for r in fake_openai.image_requests()] == ["gpt-image-2"], "no fallback after a partial image went out"
    assert balance(server, secret) == 1000


# ------------------------------------------------------------------------------------------
# 6. the official SDK
# ------------------------------------------------------------------------------------------


def test_the_openai_sdk_passes_models_and_provider_through_extra_body(
    imgproxy: ImgproxyFactory, tmp_path: Path, gemini: FakeGemini
) -> None:
    server = start(imgproxy, tmp_path, openai_url=refused_url(), gemini=gemini)
    _, secret = create_key(server, credits=1000)

    raw = client(server.url, api_key=secret).images.with_raw_response.generate(
        model="gpt-image-2",
        prompt=fresh_prompt("a paper crane"),
        extra_body={"models": ["nano-banana-pro"], "provider": {"order": ["openai", "gemini"], "allow_fallbacks": True}},
    )

    assert raw.status_code == 200, raw.text[:500]
    assert raw.headers.get("x-model") == "nano-banana-pro"
    assert raw.headers.get("x-fallbacks") == "1"
    response = raw.parse()
    assert response.data and base64.b64decode(response.data[0].b64_json) == gemini.final_images[0]
    assert json.loads(raw.text)["model"] == "nano-banana-pro"
    assert balance(server, secret) == 1000 - NANO_BANANA_PRO
