"""Per-key limits with one meaning, held across instances.

- A key's limits are refused when they mean nothing (0, out of range, an empty or unknown
  `models` list), with a 400 naming the field over the admin API and a failing `keys create`.
- Two instances on one Postgres database share each key's requests per minute and requests
  in flight: N instances do not give a key N times its limits, and a crashed instance's slots
  come back when its leases expire.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from conftest import ImgproxyFactory, Server, clean_env, imgproxy_bin
from fake_openai import FakeOpenAI
from helpers import assert_error_envelope
from test_credits import (
    MASTER_KEY,
    Backend,
    admin,
    balance,
    create_key,
    generate,
    start_openai_server,
    wait_for,
)
from test_tasks import kill_9

# The lease a crashed instance leaves behind expires this long after its last renewal
# (`LEASE_TTL` in imgproxy-core/src/service/db/limits.rs); waits allow twice that.
LEASE_TTL_SECS = 30


def _assert_429(status: int, headers: dict[str, str], raw: bytes) -> int:
    assert_error_envelope(status, headers, raw, expected_status=429)
    retry_after = headers.get("retry-after", "")
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 61, f"Retry-After {retry_after!r}"
    return int(retry_after)


# ------------------------------------------------------------------------------------------
# one meaning: refused at creation
# ------------------------------------------------------------------------------------------


def test_keys_with_limits_that_mean_nothing_are_refused_naming_the_field(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rpm": 0}, "rpm"),
        ({"images_per_minute": 0}, "images_per_minute"),
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"rpm": -1}, "rpm"),
        ({"max_concurrent": 10**6}, "max_concurrent"),
        ({"models": []}, "models"),
        ({"models": ["placeholder", "nope"]}, "models"),
        ({"credits": -1}, "credits"),
    ]
    for fields, param in cases:
        status, headers, raw = admin(server, "POST", "/keys", {"name": "bad", **fields})
        error = assert_error_envelope(status, headers, raw, expected_status=400)
        assert error["param"] == param, (fields, error)
    status, _, raw = admin(server, "GET", "/keys")
    assert status == 200 and json.loads(raw)["data"] == [], "a refused key must not be stored"

    # Absent means unlimited: a key without limits makes more requests than any limit above.
    key, secret = create_key(server, credits=100)
    assert key["rpm"] is None and key["max_concurrent"] is None and key["models"] is None, key
    for _ in range(5):
        assert generate(server, secret)[0] == 200


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(imgproxy_bin()), "keys", "create", "--name", "cli", *args, "--data-dir", str(data_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, env=clean_env({"RUST_LOG": "warn"}))


def test_the_cli_refuses_the_same_keys(tmp_path: Path) -> None:
    data_dir = tmp_path / "cli"
    for args, named in [
        (["--rpm", "0"], "`rpm`"),
        (["--images-per-minute", "0"], "`images_per_minute`"),
        (["--max-concurrent", "0"], "`max_concurrent`"),
        (["--models", "placeholder,nope"], "`nope`"),
    ]:
        done = _cli(data_dir, *args)
        assert done.returncode != 0, f"keys create {args} was accepted: {done.stdout}"
        assert named in done.stderr, f"keys create {args}: the error must name {named}: {done.stderr[-1000:]}"
        assert done.stdout == "", done.stdout
    done = _cli(data_dir, "--rpm", "1", "--models", "placeholder")
    assert done.returncode == 0, done.stderr[-1000:]
    key = json.loads(done.stdout)["key"]
    assert key["rpm"] == 1 and key["models"] == ["placeholder"], key
    listed = subprocess.run(
        [str(imgproxy_bin()), "keys", "list", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=30, env=clean_env({"RUST_LOG": "warn"}),
    )
    assert [k["id"] for k in json.loads(listed.stdout)] == [key["id"]], "only the valid key was stored"


# ------------------------------------------------------------------------------------------
# across instances
# ------------------------------------------------------------------------------------------


def test_two_instances_give_a_key_its_rpm_once(imgproxy: ImgproxyFactory, postgres_url: str) -> None:
    env = {"IMGPROXY_MASTER_KEY": MASTER_KEY, **Backend("postgres", postgres_url).env}
    first = imgproxy.start(env)
    second = imgproxy.start(env)
    key, secret = create_key(first, credits=1000, rpm=30)

    servers = [first, second]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda i: (i % 2, generate(servers[i % 2], secret)), range(50)))
    elapsed = time.monotonic() - started
    # Everything above happened inside one minute, so exactly the limit may have been admitted;
    # 50 tiny placeholder requests taking a minute would be a machine too slow to tell.
    assert elapsed < 55, f"50 requests took {elapsed:.0f}s: too slow to test a per-minute limit"

    accepted = [(i, r) for i, r in answers if r[0] == 200]
    refused = [(i, r) for i, r in answers if r[0] != 200]
    assert len(accepted) == 30, f"{len(accepted)} of 50 accepted across two instances under rpm = 30"
    for _, (status, headers, raw) in refused:
        _assert_429(status, headers, raw)
    assert {i for i, _ in accepted} == {0, 1}, "both instances served part of the minute"
    assert {i for i, _ in refused} == {0, 1}, "both instances refused, counting the other's requests"
    assert balance(second, secret) == 1000 - 30, "refused requests are not charged"

    # A change made through one instance holds on the other from the key's next request.
    status, _, raw = admin(second, "PATCH", f"/keys/{key['id']}", {"rpm": None})
    assert status == 200 and json.loads(raw)["rpm"] is None, raw[:300]
    assert generate(first, secret)[0] == 200, "the limit removed through the other instance still held"


def test_two_instances_share_max_concurrent_and_a_crashed_ones_slots_come_back(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, postgres_url: str
) -> None:
    backend = Backend("postgres", postgres_url)
    first = start_openai_server(imgproxy, fake_openai, backend)
    second = start_openai_server(imgproxy, fake_openai, backend)
    _, secret = create_key(first, credits=100, max_concurrent=2)
    slow_generate = lambda server: generate(server, secret, 1, "gpt-image-2", 120, quality="low")  # noqa: E731

    fake_openai.delay_images(90)
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        held = [pool.submit(slow_generate, first) for _ in range(2)]
        wait_for(lambda: len(fake_openai.image_requests()) == 2, 20, "two requests on the first instance to reach the upstream")
        # The second instance sees the first one's requests in flight.
        status, headers, raw = generate(second, secret, 1, "gpt-image-2", quality="low")
        _assert_429(status, headers, raw)
        assert not any(f.done() for f in held), "the refusal came while both slots were held"
        assert len(fake_openai.image_requests()) == 2, "a refused request must not reach the upstream"

        # kill -9: nothing releases the two slots but their leases' expiry.
        kill_9(first)
        killed = time.monotonic()
        fake_openai.delay_images(0)
        assert generate(second, secret, 1, "gpt-image-2", quality="low")[0] == 429, "the dead instance's leases still hold"

        def admitted() -> bool:
            status = generate(second, secret, 1, "gpt-image-2", quality="low")[0]
            assert status in (200, 429), status
            if status == 429:
                time.sleep(0.5)
            return status == 200

        wait_for(admitted, 2 * LEASE_TTL_SECS + 10, "the crashed instance's slots to expire")
        # Not through any release: only expiry frees them, which takes well over a second.
        assert time.monotonic() - killed > 5, "the dead instance's slots came back before their leases expired"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
