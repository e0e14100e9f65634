"""Metered API keys: issued keys, credits, the ledger, per-key limits and crash safety
(issue 4), against the real binary on SQLite (the data dir's default) and on Postgres.

Credits are checked three ways: what the API answers (`credits_used`, `X-Credits-Remaining`,
`GET /v1/credits`, the admin API), and the ledger table itself, read straight from the database,
whose signed amounts must add up to the key's balance row after row.

Postgres: every test gets a database of its own on IMGPROXY_E2E_POSTGRES_URL (default
``postgres://postgres@127.0.0.1:5432``), created with psql and dropped afterwards.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import openai
import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server, clean_env, imgproxy_bin, psql
from fake_openai import FakeOpenAI, server_error
from helpers import assert_error_envelope, client, http

MASTER_KEY = "mk-credits-e2e-master"
KEY_ID = re.compile(r"^[A-Za-z0-9_\-]+$")

# gpt-image-2 at quality=low costs 6 credits per image (imgproxy-core/catalog/openai.toml);
# the placeholder model costs 1.
GPT_LOW = 6


# ------------------------------------------------------------------------------------------
# databases
# ------------------------------------------------------------------------------------------


@dataclass
class LedgerRow:
    id: int
    kind: str
    request_id: str | None
    amount: int
    balance_after: int


@dataclass
class Backend:
    """Where a test's servers keep keys and the ledger."""

    kind: str  # "sqlite" or "postgres"
    url: str | None = None  # the Postgres database; SQLite lives in each server's data dir

    @property
    def env(self) -> dict[str, str]:
        return {"IMGPROXY_DATABASE_URL": self.url} if self.url else {}

    def cli_args(self, data_dir: Path) -> list[str]:
        args = ["--data-dir", str(data_dir)]
        if self.url:
            args += ["--database-url", self.url]
        return args

    def ledger(self, server: Server, key_id: str) -> list[LedgerRow]:
        """Every ledger row of ``key_id``, oldest first, read from the database itself."""
        assert KEY_ID.match(key_id), key_id
        query = "SELECT id, kind, request_id, amount, balance_after FROM ledger WHERE key_id = {} ORDER BY id"
        if self.kind == "sqlite":
            path = server.data_dir / "imgproxy.db"
            assert path.is_file(), f"no SQLite database at {path} (the default is <data_dir>/imgproxy.db)"
            with sqlite3.connect(f"file:{path}", uri=True, timeout=30) as db:
                rows = db.execute(query.format("?"), (key_id,)).fetchall()
            return [LedgerRow(int(i), k, r, int(a), int(b)) for i, k, r, a, b in rows]
        out = psql(self.url or "", query.format(":'key'") + ";\n", {"key": key_id})
        result = []
        for line in out.splitlines():
            if line.strip():
                i, k, r, a, b = line.split("\t")
                result.append(LedgerRow(int(i), k, r or None, int(a), int(b)))
        return result

    def stored_balance(self, server: Server, key_id: str) -> int:
        assert KEY_ID.match(key_id), key_id
        if self.kind == "sqlite":
            with sqlite3.connect(f"file:{server.data_dir / 'imgproxy.db'}", uri=True, timeout=30) as db:
                (balance,) = db.execute("SELECT balance FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            return int(balance)
        return int(psql(self.url or "", "SELECT balance FROM api_keys WHERE id = :'key';\n", {"key": key_id}).strip())


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite")
    return Backend("postgres", request.getfixturevalue("postgres_url"))


# ------------------------------------------------------------------------------------------
# API helpers
# ------------------------------------------------------------------------------------------


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def admin(server: Server, method: str, path: str, body: Any = None, key: str = MASTER_KEY) -> tuple[int, dict[str, str], bytes]:
    return http(method, f"{server.url}/v1/admin{path}", json_body=body, headers=bearer(key))


def create_key(server: Server, **fields: Any) -> tuple[dict[str, Any], str]:
    """Issues a key through the admin API: (key object, secret)."""
    body = {"name": fields.pop("name", f"e2e-{secrets.token_hex(3)}"), **fields}
    status, _, raw = admin(server, "POST", "/keys", body)
    assert status == 201, f"POST /v1/admin/keys {body} -> {status}: {raw[:500]!r}"
    created = json.loads(raw)
    assert isinstance(created.get("secret"), str) and created["secret"].startswith("ipk_"), created
    return created["key"], created["secret"]


_PROMPTS = itertools.count()


def generate(
    server: Server, secret: str | None, n: int = 1, model: str = "placeholder", timeout: float = 60.0, **extra: Any
) -> tuple[int, dict[str, str], bytes]:
    # A fresh prompt per call: identical requests would be answered (free) from the cache, and
    # these tests are about what generations cost.
    body: dict[str, Any] = {"model": model, "prompt": f"a ledger in ink #{next(_PROMPTS)}", "n": n, **extra}
    if model == "placeholder":
        body.setdefault("size", "16x16")
    return http(
        "POST",
        f"{server.url}/v1/images/generations",
        json_body=body,
        headers=bearer(secret) if secret else {},
        timeout=timeout,
    )


def credits(server: Server, secret: str) -> dict[str, Any]:
    status, _, raw = http("GET", f"{server.url}/v1/credits", headers=bearer(secret))
    assert status == 200, f"GET /v1/credits -> {status}: {raw[:500]!r}"
    return json.loads(raw)


def balance(server: Server, secret: str) -> int:
    value = credits(server, secret)["balance"]
    assert isinstance(value, int), value
    return value


def assert_ok_metered(status: int, headers: dict[str, str], raw: bytes, n: int, per_image: int) -> int:
    """A successful metered answer: n images, credits_used == n × price, X-Credits-Remaining
    a non-negative integer (returned)."""
    assert status == 200, f"expected 200, got {status}: {raw[:500]!r}"
    body = json.loads(raw)
    assert len(body["data"]) == n, body
    assert body.get("credits_used") == n * per_image, f"credits_used {body.get('credits_used')!r}, expected {n * per_image}"
    remaining = headers.get("x-credits-remaining")
    assert remaining is not None and re.fullmatch(r"\d+", remaining), f"X-Credits-Remaining is {remaining!r}"
    return int(remaining)


def assert_insufficient(status: int, headers: dict[str, str], raw: bytes) -> None:
    assert_error_envelope(status, headers, raw, expected_status=402, code="insufficient_credits")


def assert_ledger_adds_up(rows: list[LedgerRow], final_balance: int) -> None:
    """Row after row, balance_after is the previous balance_after plus the row's signed amount,
    never negative, and the amounts sum to the final balance."""
    assert rows, "the key has no ledger rows at all (its starting credits are one)"
    running = 0
    for row in rows:
        running += row.amount
        assert row.balance_after == running, (
            f"ledger row {row} says balance_after {row.balance_after}, the amounts so far add up to {running}"
        )
        assert row.balance_after >= 0, f"the balance went negative: {row}"
    assert running == final_balance, f"the ledger sums to {running}, the balance is {final_balance}"


def hammer(targets: list[tuple[Server, int]], secret: str) -> list[tuple[int, int, dict[str, str], bytes]]:
    """Sends every (server, n) request at once, one thread each, released together by a
    barrier: [(n, status, headers, body)] in the order given."""
    barrier = threading.Barrier(len(targets))

    def one(target: tuple[Server, int]) -> tuple[int, int, dict[str, str], bytes]:
        server, n = target
        barrier.wait()
        status, headers, raw = generate(server, secret, n=n, timeout=90)
        return n, status, headers, raw

    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        return list(pool.map(one, targets))


def start_openai_server(
    imgproxy: ImgproxyFactory,
    fake: FakeOpenAI,
    backend: Backend | None = None,
    extra_env: dict[str, str] | None = None,
    **kwargs: Any,
) -> Server:
    env = {"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": f"{fake.url}/v1", "IMGPROXY_MASTER_KEY": MASTER_KEY}
    env.update(backend.env if backend else {})
    env.update(extra_env or {})
    return imgproxy.start(env, **kwargs)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------
# concurrency: no overspend
# ------------------------------------------------------------------------------------------


def test_200_simultaneous_requests_on_50_credits_give_exactly_50_successes(
    imgproxy: ImgproxyFactory, backend: Backend
) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY, **backend.env})
    key, secret = create_key(server, credits=50)
    assert key["balance"] == 50

    results = hammer([(server, 1)] * 200, secret)

    ok = [r for r in results if r[1] == 200]
    statuses = sorted({r[1] for r in results})
    assert len(ok) == 50, f"{len(ok)} of 200 succeeded on 50 credits (statuses seen: {statuses})"
    for n, status, headers, raw in results:
        if status == 200:
            remaining = assert_ok_metered(status, headers, raw, n, per_image=1)
            assert remaining <= 49
        else:
            assert_insufficient(status, headers, raw)

    assert balance(server, secret) == 0
    assert backend.stored_balance(server, key["id"]) == 0
    rows = backend.ledger(server, key["id"])
    assert_ledger_adds_up(rows, 0)
    kinds = [row.kind for row in rows]
    assert kinds.count("credit") == 1 and rows[0].kind == "credit" and rows[0].amount == 50, rows[:3]
    assert kinds.count("reserve") == 50, f"{kinds.count('reserve')} reserve rows for 50 successful requests"
    assert kinds.count("settle") == 50, f"{kinds.count('settle')} settle rows for 50 successful requests"
    assert kinds.count("refund") == 0, "nothing failed, so nothing is refunded"
    assert len({row.request_id for row in rows if row.kind == "reserve"}) == 50, "request ids must be unique"


def test_a_mix_of_n1_and_n3_never_overspends_and_the_ledger_adds_up(imgproxy: ImgproxyFactory, backend: Backend) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY, **backend.env})
    initial = 100
    key, secret = create_key(server, credits=initial)

    # 80 × n=1 and 80 × n=3, interleaved: 320 credits of demand on 100.
    results = hammer([(server, 1 if i % 2 else 3) for i in range(160)], secret)

    used = 0
    refused = {1: 0, 3: 0}
    for n, status, headers, raw in results:
        if status == 200:
            assert_ok_metered(status, headers, raw, n, per_image=1)
            used += n
        else:
            assert_insufficient(status, headers, raw)
            refused[n] += 1
    final = balance(server, secret)
    assert final >= 0
    assert used == initial - final, f"successful credits_used add up to {used}, but the balance fell by {initial - final}"
    # Placeholder requests never fail, so the balance only falls: a refused n=1 saw 0 credits
    # left, a refused n=3 saw fewer than 3.
    if refused[1]:
        assert final == 0, f"an n=1 request got 402, yet {final} credits are left"
    if refused[3]:
        assert final < 3, f"an n=3 request got 402, yet {final} credits are left"
    assert refused[1] + refused[3] > 0, "320 credits of demand on 100 cannot all succeed"

    assert backend.stored_balance(server, key["id"]) == final
    rows = backend.ledger(server, key["id"])
    assert_ledger_adds_up(rows, final)
    successes = sum(1 for r in results if r[1] == 200)
    assert sum(1 for row in rows if row.kind == "reserve") == successes
    assert sum(1 for row in rows if row.kind == "settle") == successes


def test_two_servers_sharing_one_postgres_never_overspend(imgproxy: ImgproxyFactory, postgres_url: str) -> None:
    backend = Backend("postgres", postgres_url)
    env = {"IMGPROXY_MASTER_KEY": MASTER_KEY, **backend.env}
    # Both start at once on the empty database: the migrations must not trip over each other.
    first = imgproxy.start(env, wait=False)
    second = imgproxy.start(env, wait=False)
    imgproxy.wait_healthy(first)
    imgproxy.wait_healthy(second)
    key, secret = create_key(first, credits=60)

    # The key made on one instance works on the other at once.
    status, listed, raw = admin(second, "GET", "/keys")
    assert status == 200 and key["id"] in raw.decode(), raw[:500]

    results = hammer([(first if i % 2 else second, 1) for i in range(200)], secret)

    ok = [r for r in results if r[1] == 200]
    assert len(ok) == 60, f"{len(ok)} of 200 succeeded across two instances on 60 credits"
    for n, status, headers, raw in results:
        if status == 200:
            assert_ok_metered(status, headers, raw, n, per_image=1)
        else:
            assert_insufficient(status, headers, raw)
    by_server = {first.port: 0, second.port: 0}
    for index, result in enumerate(results):
        if result[1] == 200:
            by_server[(first if index % 2 else second).port] += 1
    assert all(by_server.values()), f"both instances should have served some requests: {by_server}"

    assert balance(first, secret) == 0 and balance(second, secret) == 0
    rows = backend.ledger(first, key["id"])
    assert_ledger_adds_up(rows, 0)
    assert sum(1 for row in rows if row.kind == "reserve") == 60


# ------------------------------------------------------------------------------------------
# settle and refund
# ------------------------------------------------------------------------------------------


def test_sdk_sees_credits_used_the_remaining_header_and_a_402(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    key, secret = create_key(server, credits=3)
    sdk = client(server.url, api_key=secret)

    raw = sdk.images.with_raw_response.generate(model="placeholder", prompt="a coin", n=2, size="16x16")
    assert raw.headers.get("x-credits-remaining") == "1"
    body = json.loads(raw.content)
    assert body.get("credits_used") == 2, body.get("credits_used")
    assert len(raw.parse().data or []) == 2

    # The same request again is a cache hit: free, and the balance is unchanged.
    raw = sdk.images.with_raw_response.generate(model="placeholder", prompt="a coin", n=2, size="16x16")
    assert raw.headers.get("x-cache-status") == "HIT"
    assert json.loads(raw.content).get("credits_used") == 0
    assert raw.headers.get("x-credits-remaining") == "1"

    with pytest.raises(openai.APIStatusError) as caught:
        sdk.images.generate(model="placeholder", prompt="another coin", n=2, size="16x16")
    assert caught.value.status_code == 402
    assert isinstance(caught.value.body, dict) and caught.value.body.get("code") == "insufficient_credits", caught.value.body
    assert balance(server, secret) == 1, "a refused request must not take credits"

    # The master key stays unmetered.
    status, headers, raw_body = generate(server, MASTER_KEY, n=2)
    assert status == 200, raw_body[:300]
    assert "x-credits-remaining" not in headers, "the master key is unmetered"
    assert balance(server, secret) == 1

    # GET /v1/credits: balance, and the recent charges with their fields.
    answer = credits(server, secret)
    assert answer["key_id"] == key["id"] and answer["name"] == key["name"] and answer["balance"] == 1
    recent = answer["recent"]
    assert {row["kind"] for row in recent} == {"credit", "reserve", "settle"}, recent
    assert sum(row["amount"] for row in recent) == 1, recent
    for row in recent:
        assert set(row) >= {"kind", "request_id", "amount", "balance_after", "model", "inputs", "created_at"}, row
        assert isinstance(row["amount"], int) and isinstance(row["balance_after"], int), row
        assert row["balance_after"] >= 0
    reserve = next(row for row in recent if row["kind"] == "reserve")
    assert reserve["amount"] == -2 and reserve["model"] == "placeholder" and reserve["request_id"], reserve
    assert reserve["inputs"], f"the reserve row must record its pricing inputs: {reserve}"
    settle = next(row for row in recent if row["kind"] == "settle")
    assert settle["request_id"] == reserve["request_id"], (settle, reserve)
    assert settle["amount"] == 0, f"both images were returned, so nothing comes back: {settle}"
    assert_ledger_adds_up(Backend("sqlite").ledger(server, key["id"]), 1)


def _assert_fully_refunded(server: Server, secret: str, key_id: str, initial: int, reserved: int) -> None:
    assert balance(server, secret) == initial, "a failed request must give back everything it reserved"
    rows = Backend("sqlite").ledger(server, key_id)
    assert_ledger_adds_up(rows, initial)
    reserves = [row for row in rows if row.kind == "reserve"]
    refunds = [row for row in rows if row.kind == "refund"]
    assert len(reserves) == 1 and reserves[0].amount == -reserved, rows
    assert len(refunds) == 1 and refunds[0].amount == reserved, rows
    assert refunds[0].request_id == reserves[0].request_id, rows
    assert not [row for row in rows if row.kind == "settle"], f"a failed request is refunded, not settled: {rows}"
    recent = credits(server, secret)["recent"]
    assert any(row["kind"] == "refund" and row["amount"] == reserved for row in recent), recent


def test_an_upstream_500_refunds_in_full(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    server = start_openai_server(imgproxy, fake_openai)
    key, secret = create_key(server, credits=100)
    fake_openai.always(server_error())

    with pytest.raises(openai.APIStatusError) as caught:
        client(server.url, api_key=secret).images.generate(model="gpt-image-2", prompt="x", quality="low", n=2)
    assert caught.value.status_code >= 500, caught.value
    assert fake_openai.image_requests(), "the request never reached the upstream"
    _assert_fully_refunded(server, secret, key["id"], 100, 2 * GPT_LOW)

    # And a success on the same key is charged n × 6.
    fake_openai.always(None)
    status, headers, raw = generate(server, secret, n=2, model="gpt-image-2", quality="low")
    assert assert_ok_metered(status, headers, raw, 2, per_image=GPT_LOW) == 100 - 2 * GPT_LOW


def test_an_upstream_timeout_refunds_in_full(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    config = tmp_path / "imgproxy.toml"
    config.write_text("[providers.openai]\ntimeout_secs = 1\n")
    server = start_openai_server(imgproxy, fake_openai, args=["--config", str(config)])
    key, secret = create_key(server, credits=100)
    fake_openai.delay_images(6)

    started = time.monotonic()
    status, headers, raw = generate(server, secret, n=1, model="gpt-image-2", quality="low", timeout=30)
    elapsed = time.monotonic() - started
    assert status in (502, 504), f"expected an upstream timeout (504), got {status}: {raw[:300]!r}"
    assert_error_envelope(status, headers, raw, expected_status=status)
    assert elapsed < 5.5, f"the 1 s upstream timeout did not apply: the request took {elapsed:.1f}s"
    _assert_fully_refunded(server, secret, key["id"], 100, GPT_LOW)


def test_kill_9_mid_request_then_restart_refunds_the_reservation_exactly_once(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, backend: Backend
) -> None:
    # Every process has its own id; the restarted one refunds the dead one's reservation once the
    # dead one's lease (2 s here, 15 s by default) has expired.
    lease = {"IMGPROXY_INSTANCE_LEASE_SECS": "2"}
    server = start_openai_server(imgproxy, fake_openai, backend, lease)
    key, secret = create_key(server, credits=50)
    fake_openai.delay_images(15)

    def doomed() -> None:
        try:
            generate(server, secret, n=1, model="gpt-image-2", quality="low", timeout=30)
        except OSError:
            pass  # the server dies under it

    thread = threading.Thread(target=doomed, daemon=True)
    thread.start()
    wait_for(lambda: bool(fake_openai.image_requests()), 10, "the request to reach the upstream")
    assert balance(server, secret) == 50 - GPT_LOW, "the request must hold a reservation while in flight"
    reserves = [row for row in backend.ledger(server, key["id"]) if row.kind == "reserve"]
    assert len(reserves) == 1, reserves
    request_id = reserves[0].request_id

    assert server.proc is not None
    server.proc.kill()  # SIGKILL: no chance to refund
    server.proc.wait(timeout=10)
    server.exit_code = server.proc.returncode  # the kill is intended, not a failed shutdown
    thread.join(timeout=10)
    assert backend.stored_balance(server, key["id"]) == 50 - GPT_LOW, "nothing can refund while the process is dead"

    restarted = start_openai_server(imgproxy, fake_openai, backend, lease, data_dir=server.data_dir)
    wait_for(lambda: balance(restarted, secret) == 50, 10, "the restart to release the dead request's reservation")

    def refunds() -> list[LedgerRow]:
        return [row for row in backend.ledger(restarted, key["id"]) if row.kind == "refund"]

    assert [(row.request_id, row.amount) for row in refunds()] == [(request_id, GPT_LOW)]
    assert_ledger_adds_up(backend.ledger(restarted, key["id"]), 50)

    # A second restart must not refund it again.
    again = imgproxy.restart(restarted)
    assert balance(again, secret) == 50
    assert len(refunds()) == 1, f"the reservation was refunded more than once: {refunds()}"
    assert_ledger_adds_up(backend.ledger(again, key["id"]), 50)


# ------------------------------------------------------------------------------------------
# limits
# ------------------------------------------------------------------------------------------


def _assert_limited(status: int, headers: dict[str, str], raw: bytes) -> None:
    assert_error_envelope(status, headers, raw, expected_status=429)
    retry_after = headers.get("retry-after")
    assert retry_after is not None and re.fullmatch(r"\d+", retry_after), f"Retry-After is {retry_after!r}"
    # At most 61: counts are per second, so a slot frees when its whole second has left the
    # 60 s window, up to a second after the request.
    assert 1 <= int(retry_after) <= 61, f"Retry-After {retry_after} for a per-minute limit"


def test_rpm_limit_gives_429_with_retry_after(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    key, secret = create_key(server, credits=100, rpm=3)
    for _ in range(3):
        status, headers, raw = generate(server, secret)
        assert_ok_metered(status, headers, raw, 1, per_image=1)
    status, headers, raw = generate(server, secret)
    _assert_limited(status, headers, raw)
    assert balance(server, secret) == 97, "a request refused by a limit must not be charged"
    # Another key is not affected by this key's limit.
    _, other = create_key(server, credits=10, rpm=3)
    assert generate(server, other)[0] == 200


def test_images_per_minute_limit_gives_429_with_retry_after(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    _, secret = create_key(server, credits=100, images_per_minute=5)
    status, headers, raw = generate(server, secret, n=3)
    assert_ok_metered(status, headers, raw, 3, per_image=1)
    status, headers, raw = generate(server, secret, n=2)
    assert_ok_metered(status, headers, raw, 2, per_image=1)
    status, headers, raw = generate(server, secret, n=1)
    _assert_limited(status, headers, raw)
    assert balance(server, secret) == 95


def test_max_concurrent_limit_gives_429_while_requests_are_in_flight(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI
) -> None:
    server = start_openai_server(imgproxy, fake_openai)
    _, secret = create_key(server, credits=100, max_concurrent=2)
    fake_openai.delay_images(8)

    with ThreadPoolExecutor(max_workers=2) as pool:
        slow = [pool.submit(generate, server, secret, 1, "gpt-image-2", 30, quality="low") for _ in range(2)]
        wait_for(lambda: len(fake_openai.image_requests()) == 2, 10, "two requests to reach the upstream")
        status, headers, raw = generate(server, secret, n=1, model="gpt-image-2", quality="low")
        # Refused at once, not queued: the answer came while both slots were still taken.
        assert not any(future.done() for future in slow), "the third request waited for a slot"
        _assert_limited(status, headers, raw)
        assert len(fake_openai.image_requests()) == 2, "a refused request must not reach the upstream"
        for future in slow:
            assert future.result()[0] == 200, future.result()[2][:300]
    fake_openai.delay_images(0)
    status, headers, raw = generate(server, secret, n=1, model="gpt-image-2", quality="low")
    assert assert_ok_metered(status, headers, raw, 1, per_image=GPT_LOW) == 100 - 3 * GPT_LOW


def test_a_key_limited_to_some_models_cannot_use_others_and_pays_nothing(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    _, secret = create_key(server, credits=10, models=["gpt-image-2"])
    status, headers, raw = generate(server, secret)
    assert 400 <= status < 500 and status not in (401, 402), f"placeholder on a gpt-image-2-only key: {status} {raw[:300]!r}"
    assert_error_envelope(status, headers, raw, expected_status=status)
    assert balance(server, secret) == 10


# ------------------------------------------------------------------------------------------
# authentication
# ------------------------------------------------------------------------------------------


def test_a_revoked_key_gets_401_at_once(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    key, secret = create_key(server, credits=10)
    assert generate(server, secret)[0] == 200
    status, _, raw = admin(server, "POST", f"/keys/{key['id']}/revoke")
    assert status == 200, raw[:300]
    assert json.loads(raw)["revoked"] is True
    status, headers, raw = generate(server, secret)
    assert_error_envelope(status, headers, raw, expected_status=401)
    status, headers, raw = http("GET", f"{server.url}/v1/credits", headers=bearer(secret))
    assert_error_envelope(status, headers, raw, expected_status=401)


@pytest.mark.parametrize("master", [True, False], ids=["master-key-set", "open-server"])
def test_a_wrong_key_and_no_key_get_401(imgproxy: ImgproxyFactory, master: bool) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY} if master else {})
    if master:
        _, secret = create_key(server, credits=10)
        forged = [secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb"), "sk-wrong", MASTER_KEY + "x"]
    else:
        forged = []
    forged.append("ipk_" + "A" * 40)  # key-shaped but never issued: refused even on an open server
    for token in forged:
        status, headers, raw = generate(server, token)
        assert_error_envelope(status, headers, raw, expected_status=401)
        with pytest.raises(openai.AuthenticationError):
            client(server.url, api_key=token).images.generate(model="placeholder", prompt="x", size="16x16")
    if master:
        status, headers, raw = generate(server, None)
        assert_error_envelope(status, headers, raw, expected_status=401)
        status, headers, raw = http("GET", f"{server.url}/v1/credits")
        assert_error_envelope(status, headers, raw, expected_status=401)


# ------------------------------------------------------------------------------------------
# admin API and CLI
# ------------------------------------------------------------------------------------------


def test_admin_api_creates_lists_credits_and_revokes_keys(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    fields = {"name": "ops", "credits": 7, "rpm": 30, "images_per_minute": 40, "max_concurrent": 4, "models": ["placeholder"]}
    status, _, raw = admin(server, "POST", "/keys", fields)
    assert status == 201, raw[:500]
    created = json.loads(raw)
    key, secret = created["key"], created["secret"]
    assert re.fullmatch(r"ipk_[A-Za-z0-9]{20,}", secret), secret
    for name, value in fields.items():
        assert key[name if name != "credits" else "balance"] == value, (name, key)
    assert key["revoked"] is False and isinstance(key["created_at"], int) and key["id"]

    status, _, raw = admin(server, "GET", "/keys")
    assert status == 200, raw[:500]
    assert secret not in raw.decode(), "the key list must never show a secret"
    assert "hash" not in raw.decode(), "the key list must not show the secret's hash"
    listed = json.loads(raw)
    keys = listed["data"] if isinstance(listed, dict) else listed
    assert [k for k in keys if k["id"] == key["id"] and k["balance"] == 7], keys

    status, _, raw = admin(server, "POST", f"/keys/{key['id']}/credit", {"amount": 25})
    assert status == 200, raw[:500]
    assert json.loads(raw)["balance"] == 32
    assert balance(server, secret) == 32
    assert any(row["kind"] == "credit" and row["amount"] == 25 for row in credits(server, secret)["recent"])

    # An issued key may not use the admin API; no key at all is a 401.
    for method, path, body in [
        ("POST", "/keys", {"name": "escalate", "credits": 1000}),
        ("GET", "/keys", None),
        ("POST", f"/keys/{key['id']}/credit", {"amount": 1000}),
        ("POST", f"/keys/{key['id']}/revoke", None),
    ]:
        status, headers, raw = admin(server, method, path, body, key=secret)
        assert_error_envelope(status, headers, raw, expected_status=403)
        status, headers, raw = http(method, f"{server.url}/v1/admin{path}", json_body=body)
        assert_error_envelope(status, headers, raw, expected_status=401)
    assert balance(server, secret) == 32, "a refused admin call must change nothing"

    status, _, raw = admin(server, "POST", f"/keys/{key['id']}/revoke")
    assert status == 200 and json.loads(raw)["revoked"] is True, raw[:500]
    assert generate(server, secret)[0] == 401


def _cli(backend: Backend, data_dir: Path, *args: str) -> Any:
    command = [str(imgproxy_bin()), "keys", *args, *backend.cli_args(data_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, env=clean_env({"RUST_LOG": "warn"}))
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}"
    try:
        return json.loads(done.stdout), done.stdout
    except ValueError:
        pytest.fail(f"{' '.join(command)} printed no JSON on stdout: {done.stdout[:1000]!r}")


def test_cli_creates_a_working_key_lists_without_secrets_credits_and_revokes(
    imgproxy: ImgproxyFactory, backend: Backend, tmp_path: Path
) -> None:
    data_dir = tmp_path / "cli-data"
    (created, _) = _cli(
        backend, data_dir, "create", "--name", "cli", "--credits", "5", "--rpm", "100", "--models", "placeholder,gpt-image-2"
    )
    key, secret = created["key"], created["secret"]
    assert secret.startswith("ipk_") and key["balance"] == 5 and key["rpm"] == 100, created
    assert key["models"] == ["placeholder", "gpt-image-2"], key

    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY, **backend.env}, data_dir=data_dir)
    status, headers, raw = generate(server, secret)
    assert assert_ok_metered(status, headers, raw, 1, per_image=1) == 4

    # The CLI works on the same database while the server runs.
    (listed, text) = _cli(backend, data_dir, "list")
    assert isinstance(listed, list), listed
    assert secret not in text and "hash" not in text, "keys list must never show a secret or its hash"
    assert [k for k in listed if k["id"] == key["id"] and k["balance"] == 4], listed

    (credited, _) = _cli(backend, data_dir, "credit", key["id"], "10")
    assert credited["id"] == key["id"] and credited["balance"] == 14, credited
    assert balance(server, secret) == 14

    (revoked, _) = _cli(backend, data_dir, "revoke", key["id"])
    assert revoked["revoked"] is True, revoked
    status, headers, raw = generate(server, secret)
    assert_error_envelope(status, headers, raw, expected_status=401)


def test_a_new_instance_on_the_same_postgres_leaves_another_instances_in_flight_request_alone(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, postgres_url: str
) -> None:
    """Start-up releases only this instance's own dead reservations: a second instance starting
    while the first has a request in flight must not refund it (it would be paid for twice)."""
    backend = Backend("postgres", postgres_url)
    first = start_openai_server(imgproxy, fake_openai, backend)
    key, secret = create_key(first, credits=50)
    fake_openai.delay_images(2)
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(generate, first, secret, 1, "gpt-image-2", 30, quality="low")
        wait_for(lambda: bool(fake_openai.image_requests()), 10, "the request to reach the upstream")
        second = start_openai_server(imgproxy, fake_openai, backend)
        assert balance(second, secret) == 50 - GPT_LOW, "another instance's start released a live reservation"
        status, headers, raw = slow.result()
    assert assert_ok_metered(status, headers, raw, 1, per_image=GPT_LOW) == 50 - GPT_LOW
    assert balance(second, secret) == 50 - GPT_LOW
    rows = backend.ledger(first, key["id"])
    assert [row.kind for row in rows] == ["credit", "reserve", "settle"], rows
    assert_ledger_adds_up(rows, 50 - GPT_LOW)
