"""Instances: every imgproxy process has an identity of its own (fresh at every start, not kept
in the data dir) and holds a lease in the database; only what a dead instance (its lease
expired) left is recovered.

- A second process started on the same data dir and the same Postgres while the first has
  requests and tasks in flight leaves them alone: every request is settled and charged, every
  task succeeds, nothing is refunded.
- After a kill -9 in the middle of a generation, a restart on the same data dir answers the
  identical request as soon as the dead process's lease has expired (2 s here), not after the
  model's deadline: the dead process's generation claim falls with its lease.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import ImgproxyFactory
from fake_openai import FakeOpenAI
from test_credits import (
    GPT_LOW,
    Backend,
    assert_ledger_adds_up,
    balance,
    create_key,
    generate,
    start_openai_server,
    wait_for,
)
from test_tasks import get_task, gpt_body, post, submit, wait_task


def test_a_second_instance_on_the_same_data_dir_and_database_leaves_the_first_ones_work_alone(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, postgres_url: str
) -> None:
    backend = Backend("postgres", postgres_url)
    first = start_openai_server(imgproxy, fake_openai, backend)
    key, secret = create_key(first, credits=200)
    fake_openai.delay_images(8)  # long enough for the second process to start meanwhile

    with ThreadPoolExecutor(max_workers=8) as pool:
        requests = [pool.submit(generate, first, secret, 1, "gpt-image-2", 60, quality="low") for _ in range(8)]
        tasks = [submit(first, gpt_body(), secret)["id"] for _ in range(4)]
        wait_for(lambda: len(fake_openai.image_requests()) == 12, 10, "8 requests and 4 tasks to reach the upstream")
        assert balance(first, secret) == 200 - 12 * GPT_LOW, "each holds its reservation"

        # A second process on the same data dir and database, while all twelve are in flight.
        second = start_openai_server(imgproxy, fake_openai, backend, data_dir=first.data_dir)
        assert not any(r.done() for r in requests), "the requests were to be in flight when the second started"
        assert [get_task(second, t, secret)["status"] for t in tasks] == ["processing"] * 4
        assert balance(second, secret) == 200 - 12 * GPT_LOW, "the second's start refunded live reservations"
        answers = [r.result() for r in requests]

    for status, _, raw in answers:
        assert status == 200, raw[:300]
        assert json.loads(raw)["credits_used"] == GPT_LOW
    for task_id in tasks:
        done = wait_task(second, task_id, secret, timeout=30)
        assert done["status"] == "succeeded" and done["credits_used"] == GPT_LOW, done
    assert len(fake_openai.image_requests()) == 12, "nothing ran twice"

    # Charged exactly once each, nothing refunded.
    assert balance(first, secret) == 200 - 12 * GPT_LOW
    rows = backend.ledger(first, key["id"])
    assert_ledger_adds_up(rows, 200 - 12 * GPT_LOW)
    assert not [row for row in rows if row.kind == "refund"], rows
    by_request: dict[str, list[tuple[str, int]]] = {}
    for row in rows:
        if row.request_id:
            by_request.setdefault(row.request_id, []).append((row.kind, row.amount))
    assert len(by_request) == 12 and set(tasks) <= set(by_request), by_request
    assert all(steps == [("reserve", -GPT_LOW), ("settle", 0)] for steps in by_request.values()), by_request
    for server in (first, second):
        assert "recovered what dead instances left" not in server.log(), server.label


def test_after_a_kill_9_mid_generation_a_restart_answers_the_identical_request_at_once(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI
) -> None:
    lease = {"IMGPROXY_INSTANCE_LEASE_SECS": "2"}
    server = start_openai_server(imgproxy, fake_openai, extra_env=lease)
    key, secret = create_key(server, credits=50)
    payload = gpt_body(**{"async": False})
    fake_openai.delay_images(60)

    def doomed() -> None:
        try:
            post(server, payload, secret)
        except OSError:
            pass  # the server dies under it

    threading.Thread(target=doomed, daemon=True).start()
    wait_for(lambda: bool(fake_openai.image_requests()), 10, "the generation to reach the upstream")
    assert server.proc is not None
    server.proc.kill()  # SIGKILL: its generation claim and reservation stay behind
    server.proc.wait(timeout=10)
    server.exit_code = server.proc.returncode  # intended, not a failed shutdown
    fake_openai.delay_images(0)

    restarted = start_openai_server(imgproxy, fake_openai, extra_env=lease, data_dir=server.data_dir, port=server.port)
    started = time.monotonic()
    status, headers, raw = post(restarted, payload, secret)
    elapsed = time.monotonic() - started
    assert status == 200, raw[:300]
    assert elapsed < 5, f"the identical request took {elapsed:.1f}s: the dead process's claim held it"
    assert headers.get("x-cache-status", "").upper().startswith("MISS"), headers
    assert json.loads(raw)["credits_used"] == GPT_LOW
    assert len(fake_openai.image_requests()) == 2

    # The dead request's reservation is refunded (its instance is dead), the new one charged.
    wait_for(lambda: balance(restarted, secret) == 50 - GPT_LOW, 5, "the dead request's refund")
    rows = Backend("sqlite").ledger(restarted, key["id"])
    assert_ledger_adds_up(rows, 50 - GPT_LOW)
    steps = sorted((row.kind, row.amount) for row in rows if row.request_id)
    assert steps == sorted([("reserve", -GPT_LOW), ("refund", GPT_LOW), ("reserve", -GPT_LOW), ("settle", 0)]), rows
