"""Asynchronous tasks and signed webhooks end to end: the real binary, the placeholder model and
the OpenAI provider pointed at tests/e2e/fake_openai.py, webhooks received by
tests/e2e/webhooks.py on loopback (allowed with IMGPROXY_FETCH_ALLOW_HOSTS).

Checked: submitting (``"async": true`` in JSON or as a form part, ``Prefer: respond-async``) is a
202 with the task and its ``Location``, while a bad request is still an immediate 400 naming
its parameter; polling (``GET /v1/tasks/{id}`` and seed 004's
``GET /api/v1/images/generations?task_id=``) sees the task through to a result whose URLs serve
real images; tasks are tenant-scoped; a failed upstream fails the task with a typed error and
refunds it; cancelling a queued task is immediate, a running one drops the upstream call and
refunds; tasks survive a restart (queued ones run, interrupted ones fail ``interrupted``, each
exactly once, credits exact); instances sharing one Postgres run each task once, and fail a
dead instance's task once its lease (IMGPROXY_INSTANCE_LEASE_SECS) expired; webhooks are Standard Webhooks
(signature checked here), retried 1 s then 2 s later with the same ``webhook-id``, given up
after the window, refused for private addresses, and survive a restart.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server
from fake_openai import FakeOpenAI, moderation_blocked, server_error
from fake_upstreams import noise_png
from helpers import assert_error_envelope, http, multipart, raw_post
from imaging import PNG_SIGNATURE, parse_png
from test_credits import (
    MASTER_KEY,
    Backend,
    LedgerRow,
    assert_ledger_adds_up,
    balance,
    create_key,
)
from webhooks import WebhookReceiver, verify

# gpt-image-2 at quality=low costs 6 credits per image (imgproxy-core/catalog/openai.toml);
# the placeholder costs 1.
GPT_LOW = 6
TERMINAL = ("succeeded", "failed", "canceled")
TASK_KEYS = {
    "id", "object", "kind", "status", "model", "created_at", "started_at", "finished_at",
    "credits_used", "result", "error", "callback_url", "webhook", "request_id",
}
IMAGE = noise_png(24, seed=5)

_PROMPTS = itertools.count()


def fresh_prompt(text: str = "a lighthouse at dusk") -> str:
    """A prompt no other request used: tasks here are about generating, not the cache."""
    return f"{text} #{next(_PROMPTS)}-{secrets.token_hex(3)}"


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def auth(secret: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"} if secret else {}


def post(
    server: Server, body: dict[str, Any], secret: str | None = None, *, path: str = "/v1/images/generations",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    return http("POST", f"{server.url}{path}", json_body=body, headers={**auth(secret), **(headers or {})}, timeout=30)


def placeholder_body(**extra: Any) -> dict[str, Any]:
    return {"model": "placeholder", "prompt": fresh_prompt(), "size": "16x16", "async": True, **extra}


def gpt_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-image-2", "prompt": fresh_prompt("a harbour"), "quality": "low", "async": True, **extra}


def assert_task_object(task: Any) -> dict[str, Any]:
    assert isinstance(task, dict) and set(task) == TASK_KEYS, f"a task object has exactly {sorted(TASK_KEYS)}: {task}"
    assert isinstance(task["id"], str) and task["id"].startswith("task_"), task
    assert task["object"] == "image.task", task
    assert task["kind"] in ("generation", "edit"), task
    assert task["status"] in ("queued", "processing", *TERMINAL), task
    assert isinstance(task["created_at"], int), task
    if task["status"] in TERMINAL:
        assert isinstance(task["finished_at"], int) and task["finished_at"] >= task["created_at"], task
    return task


def accepted(status: int, headers: dict[str, str], raw: bytes) -> dict[str, Any]:
    """A 202 submission: the task object, queued (or already further), and its Location."""
    assert status == 202, f"expected 202, got {status}: {raw[:500]!r}"
    task = assert_task_object(json.loads(raw))
    assert headers.get("location") == f"/v1/tasks/{task['id']}", headers
    return task


def submit(server: Server, body: dict[str, Any], secret: str | None = None, **kwargs: Any) -> dict[str, Any]:
    return accepted(*post(server, body, secret, **kwargs))


def get_task(server: Server, task_id: str, secret: str | None = None) -> dict[str, Any]:
    status, _, raw = http("GET", f"{server.url}/v1/tasks/{task_id}", headers=auth(secret))
    assert status == 200, f"GET /v1/tasks/{task_id} -> {status}: {raw[:500]!r}"
    return assert_task_object(json.loads(raw))


def cancel(server: Server, task_id: str, secret: str | None = None) -> tuple[int, dict[str, str], bytes]:
    return http("POST", f"{server.url}/v1/tasks/{task_id}/cancel", headers=auth(secret))


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def wait_task(
    server: Server, task_id: str, secret: str | None = None, statuses: tuple[str, ...] = TERMINAL, timeout: float = 20
) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def reached() -> bool:
        nonlocal last
        last = get_task(server, task_id, secret)
        return last["status"] in statuses

    deadline = time.monotonic() + timeout
    while not reached():
        if time.monotonic() > deadline:
            pytest.fail(f"task {task_id} did not reach {statuses} within {timeout}s; it is {last}")
        time.sleep(0.05)
    return last


def seed_poll(server: Server, task_id: str, secret: str | None = None) -> tuple[int, dict[str, str], bytes]:
    return http("GET", f"{server.url}/api/v1/images/generations?task_id={task_id}", headers=auth(secret))


def fetch_image(url: str) -> bytes:
    status, headers, raw = http("GET", url)
    assert status == 200, f"GET {url} -> {status}: {raw[:300]!r}"
    assert headers.get("content-type", "").startswith("image/png"), headers
    assert raw.startswith(PNG_SIGNATURE)
    return raw


def result_urls(task: dict[str, Any], n: int = 1) -> list[str]:
    result = task["result"]
    assert isinstance(result, dict) and isinstance(result.get("data"), list), task
    assert len(result["data"]) == n, result
    urls = [item.get("url") for item in result["data"]]
    assert all(isinstance(u, str) and u.startswith("http://127.0.0.1:") for u in urls), result
    return urls


def sqlite_tasks(server: Server) -> list[tuple[str, str, str | None]]:
    """(id, status, owner) of every task in the server's SQLite database."""
    path = server.data_dir / "imgproxy.db"
    with sqlite3.connect(f"file:{path}", uri=True, timeout=30) as db:
        return db.execute("SELECT id, status, owner FROM tasks ORDER BY created_at_ms, id").fetchall()


def ledger_by_request(rows: list[LedgerRow], request_id: str) -> list[tuple[str, int]]:
    return [(row.kind, row.amount) for row in rows if row.request_id == request_id]


def kill_9(server: Server) -> None:
    """SIGKILL: nothing can run in the process after it."""
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait(timeout=10)
    server.exit_code = server.proc.returncode  # intended, not a failed shutdown


def fake_side_states(port: int) -> list[str]:
    """TCP states (/proc/net/tcp codes: 01 established, 08 close-wait, ...) of the connections
    the fake upstream on ``port`` has accepted."""
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] != "0A":  # not the listening socket
                states.append(fields[3])
    return states


def openai_env(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": f"{fake.url}/v1", **extra}


def metered_env(fake: FakeOpenAI | None = None, **extra: str) -> dict[str, str]:
    env = {"IMGPROXY_MASTER_KEY": MASTER_KEY, **extra}
    return {**openai_env(fake), **env} if fake else env


def upstream_prompts(fake: FakeOpenAI) -> list[str]:
    return [r.field("prompt") for r in fake.requests]


# ------------------------------------------------------------------------------------------
# submit and poll
# ------------------------------------------------------------------------------------------


def test_placeholder_task_submit_poll_and_fetch_the_image(server: Server) -> None:
    body = placeholder_body(n=2)
    task = submit(server, body)
    assert task["kind"] == "generation" and task["model"] == "placeholder", task
    assert task["status"] in ("queued", "processing", "succeeded"), task
    assert task["callback_url"] is None and task["webhook"] is None, task
    if task["status"] == "queued":
        assert task["result"] is None and task["error"] is None and task["finished_at"] is None, task

    done = wait_task(server, task["id"])
    assert done["status"] == "succeeded", done
    assert done["error"] is None, done
    assert isinstance(done["started_at"], int) and done["created_at"] <= done["started_at"] <= done["finished_at"], done
    result = done["result"]
    assert result["output_format"] == "png" and result["size"] == "16x16", result
    for url in result_urls(done, n=2):
        png = parse_png(fetch_image(url))
        assert (png.width, png.height) == (16, 16)

    # Seed 004's poll of the same task.
    status, _, raw = seed_poll(server, task["id"])
    assert status == 200, raw[:500]
    envelope = json.loads(raw)
    assert envelope["code"] == 200 and envelope["msg"] == "success", envelope
    data = envelope["data"]
    assert data["taskId"] == task["id"] and data["model"] == "placeholder" and data["state"] == "completed", data
    assert data["resultUrls"] == result_urls(done, n=2), data
    assert data["failCode"] is None and data["failMsg"] is None, data
    assert data["createTime"] // 1000 == done["created_at"] and data["completeTime"] // 1000 == done["finished_at"], data
    assert data["completeTime"] >= data["createTime"] and data["costTime"] >= 0, data
    for url in data["resultUrls"]:
        fetch_image(url)

    # Unknown task ids are 404 in both forms; a missing task_id is a 400 naming it.
    status, headers, raw = http("GET", f"{server.url}/v1/tasks/task_doesnotexist")
    assert_error_envelope(status, headers, raw, expected_status=404)
    status, headers, raw = seed_poll(server, "task_doesnotexist")
    assert_error_envelope(status, headers, raw, expected_status=404)
    status, headers, raw = http("GET", f"{server.url}/api/v1/images/generations")
    assert_error_envelope(status, headers, raw, expected_status=400, param="task_id")


def test_prefer_respond_async_header_and_b64_json_result(server: Server) -> None:
    body = {"model": "placeholder", "prompt": fresh_prompt(), "size": "16x16", "response_format": "b64_json"}
    task = submit(server, body, headers={"Prefer": "respond-async"})
    done = wait_task(server, task["id"])
    assert done["status"] == "succeeded", done
    (item,) = done["result"]["data"]
    assert "url" not in item or item["url"] is None, f"b64_json was asked for: {item}"
    png = parse_png(base64.b64decode(item["b64_json"], validate=True))
    assert (png.width, png.height) == (16, 16)
    # The seed poll lists URLs only: none for a b64_json task, but still completed.
    status, _, raw = seed_poll(server, task["id"])
    assert status == 200 and json.loads(raw)["data"]["state"] == "completed", raw[:300]

    # Prefer among other preferences.
    task = submit(
        server, {"model": "placeholder", "prompt": fresh_prompt(), "size": "16x16"},
        headers={"Prefer": "return=minimal, respond-async"},
    )
    assert wait_task(server, task["id"])["status"] == "succeeded"

    # Without async (and no header) the same request is synchronous: 200, not a task.
    status, _, raw = post(server, {"model": "placeholder", "prompt": fresh_prompt(), "size": "16x16"})
    assert status == 200 and "data" in json.loads(raw), raw[:300]


def test_openai_generation_and_edits_as_tasks(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    server = imgproxy.start(openai_env(fake_openai))

    # A generation through the fake, result served by URL: the upstream's image.
    body = gpt_body()
    task = submit(server, body)
    assert task["model"] == "gpt-image-2" and task["kind"] == "generation", task
    done = wait_task(server, task["id"])
    assert done["status"] == "succeeded", done
    assert len(fake_openai.image_requests()) == 1
    upstream = fake_openai.image_requests()[0]
    assert upstream.json["prompt"] == body["prompt"] and upstream.json["quality"] == "low", upstream.json
    assert "async" not in upstream.json and "callback_url" not in upstream.json, (
        f"imgproxy's own fields must not reach the upstream: {sorted(upstream.json)}"
    )
    (url,) = result_urls(done)
    assert fetch_image(url) == fake_openai.images[0], "the task's image is not the upstream's"

    # A multipart edit with an `async` text part.
    prompt = fresh_prompt("put a boat on the lake")
    form, content_type = multipart(
        [("model", "gpt-image-2"), ("prompt", prompt), ("quality", "low"), ("async", "true"),
         ("image", ("photo.png", IMAGE, "image/png"))]
    )
    edit = accepted(*raw_post(f"{server.url}/v1/images/edits", form, {"Content-Type": content_type}))
    assert edit["kind"] == "edit" and edit["model"] == "gpt-image-2", edit
    done = wait_task(server, edit["id"])
    assert done["status"] == "succeeded", done
    (upstream_edit,) = fake_openai.edit_requests()
    assert upstream_edit.is_multipart and upstream_edit.part("prompt").text == prompt
    assert [p.data for p in upstream_edit.parts_named("image[]")] == [IMAGE], upstream_edit.part_summary()
    assert "async" not in upstream_edit.form, upstream_edit.part_summary()
    (url,) = result_urls(done)
    assert fetch_image(url) == fake_openai.images[1]

    # A JSON edit (data URL) with Prefer, asking for b64_json.
    data_url = "data:image/png;base64," + base64.b64encode(IMAGE).decode()
    edit = submit(
        server,
        {"model": "gpt-image-2", "prompt": fresh_prompt("a lantern"), "quality": "low", "images": [data_url],
         "response_format": "b64_json"},
        path="/v1/images/edits",
        headers={"Prefer": "respond-async"},
    )
    assert edit["kind"] == "edit", edit
    done = wait_task(server, edit["id"])
    assert done["status"] == "succeeded", done
    assert len(fake_openai.edit_requests()) == 2
    assert [p.data for p in fake_openai.edit_requests()[1].parts_named("image[]")] == [IMAGE]
    assert base64.b64decode(done["result"]["data"][0]["b64_json"]) == fake_openai.images[2]

    # A placeholder edit as a JSON task.
    edit = submit(
        server, {"model": "placeholder", "prompt": fresh_prompt(), "size": "16x16", "images": [data_url], "async": True},
        path="/v1/images/edits",
    )
    done = wait_task(server, edit["id"])
    assert done["status"] == "succeeded" and done["kind"] == "edit", done
    parse_png(fetch_image(result_urls(done)[0]))
    assert len(fake_openai.requests) == 3, "the placeholder edit must not reach the OpenAI fake"


def test_bad_requests_are_immediate_400s_and_create_no_task(imgproxy: ImgproxyFactory) -> None:
    receiver_port = 9  # any port: the allow-list entry is exact host:port
    server = imgproxy.start({"IMGPROXY_FETCH_ALLOW_HOSTS": f"127.0.0.1:{receiver_port}"})
    cases: list[tuple[dict[str, Any], dict[str, str], str]] = [
        (placeholder_body(size="17x3"), {}, "size"),
        ({"model": "placeholder", "prompt": fresh_prompt(), "size": "17x3"}, {"Prefer": "respond-async"}, "size"),
        (placeholder_body(stream=True), {}, "stream"),
        ({"model": "placeholder", "prompt": fresh_prompt(), "stream": True}, {"Prefer": "respond-async"}, "stream"),
        ({"model": "placeholder", "prompt": fresh_prompt(), "callback_url": "https://example.com/hook"}, {}, "callback_url"),
        (placeholder_body(n=99), {}, "n"),
    ]
    for url in (
        "http://10.0.0.1/hook",
        "http://127.0.0.1:8081/hook",  # loopback, not the allowed port
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
        "http://192.168.1.10/hook",
        "http://2130706433/hook",  # 127.0.0.1 as one number
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        "http://metadata.google.internal/computeMetadata/v1/",
        "ftp://example.com/hook",
        "not a url",
    ):
        cases.append((placeholder_body(callback_url=url), {}, "callback_url"))
    wrong = []
    for body, headers, param in cases:
        status, response_headers, raw = post(server, body, headers=headers)
        try:
            assert_error_envelope(status, response_headers, raw, expected_status=400, param=param)
        except AssertionError as error:
            shown = {k: v for k, v in body.items() if k not in ("prompt", "model")}
            wrong.append(f"{shown} {headers or ''}: {str(error).splitlines()[0][:300]}")
    assert not wrong, "submissions that should be 400s:\n" + "\n".join(wrong)
    # The same on the edits endpoint (multipart).
    form, content_type = multipart(
        [("model", "placeholder"), ("prompt", "x"), ("size", "17x3"), ("async", "true"),
         ("image", ("a.png", IMAGE, "image/png"))]
    )
    status, headers, raw = raw_post(f"{server.url}/v1/images/edits", form, {"Content-Type": content_type})
    assert_error_envelope(status, headers, raw, expected_status=400, param="size")
    form, content_type = multipart(
        [("model", "placeholder"), ("prompt", "x"), ("async", "true"), ("callback_url", "http://169.254.169.254/"),
         ("image", ("a.png", IMAGE, "image/png"))]
    )
    status, headers, raw = raw_post(f"{server.url}/v1/images/edits", form, {"Content-Type": content_type})
    assert_error_envelope(status, headers, raw, expected_status=400, param="callback_url")
    assert sqlite_tasks(server) == [], "a refused submission must not create a task"

    # The allowed host:port is accepted.
    task = submit(server, placeholder_body(callback_url=f"http://127.0.0.1:{receiver_port}/hook"))
    assert task["callback_url"] == f"http://127.0.0.1:{receiver_port}/hook", task
    assert [row[0] for row in sqlite_tasks(server)] == [task["id"]]


def test_tasks_are_tenant_scoped(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start(metered_env())
    _, alice = create_key(server, credits=10)
    _, bob = create_key(server, credits=10)
    task = submit(server, placeholder_body(), alice)
    done = wait_task(server, task["id"], alice)
    assert done["status"] == "succeeded" and done["credits_used"] == 1, done
    assert done["result"]["credits_used"] == 1, done["result"]
    assert balance(server, alice) == 9

    for method, path in (
        ("GET", f"/v1/tasks/{task['id']}"),
        ("POST", f"/v1/tasks/{task['id']}/cancel"),
        ("GET", f"/api/v1/images/generations?task_id={task['id']}"),
    ):
        status, headers, raw = http(method, f"{server.url}{path}", headers=auth(bob))
        assert_error_envelope(status, headers, raw, expected_status=404)
    status, headers, raw = http("GET", f"{server.url}/v1/tasks/{task['id']}")
    assert_error_envelope(status, headers, raw, expected_status=401)
    # Cancelling a finished task leaves it as it is.
    status, _, raw = cancel(server, task["id"], alice)
    assert status == 200, raw[:300]
    after = assert_task_object(json.loads(raw))
    assert after["status"] == "succeeded" and after["credits_used"] == 1, after
    assert get_task(server, task["id"], alice)["status"] == "succeeded"
    assert balance(server, alice) == 9 and balance(server, bob) == 10


# ------------------------------------------------------------------------------------------
# failures and metering
# ------------------------------------------------------------------------------------------


def test_failed_upstream_fails_the_task_typed_and_refunds_in_full(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI
) -> None:
    server = imgproxy.start(metered_env(fake_openai))
    key, secret = create_key(server, credits=100)
    backend = Backend("sqlite")

    fake_openai.then(server_error(), moderation_blocked())
    failed = submit(server, gpt_body(n=2), secret)
    done = wait_task(server, failed["id"], secret)
    assert done["status"] == "failed", done
    assert done["result"] is None and done["credits_used"] == 0, done
    error = done["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == "upstream_error" and error["code"] == "upstream_error", error
    assert error["message"] and OPENAI_TEST_KEY not in json.dumps(done), error
    status, _, raw = seed_poll(server, failed["id"], secret)
    data = json.loads(raw)["data"]
    assert status == 200 and data["state"] == "failed", data
    assert data["failCode"] == "upstream_error" and data["failMsg"] == error["message"] and data["resultUrls"] == [], data

    blocked = submit(server, gpt_body(), secret)
    done = wait_task(server, blocked["id"], secret)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "moderation_blocked" and done["error"]["type"] == "image_generation_user_error", done
    assert balance(server, secret) == 100, "failed tasks must be refunded in full"

    ok = submit(server, gpt_body(n=2), secret)
    done = wait_task(server, ok["id"], secret)
    assert done["status"] == "succeeded" and done["credits_used"] == 2 * GPT_LOW, done
    assert done["result"]["credits_used"] == 2 * GPT_LOW, done["result"]
    assert balance(server, secret) == 100 - 2 * GPT_LOW

    rows = backend.ledger(server, key["id"])
    assert_ledger_adds_up(rows, 100 - 2 * GPT_LOW)
    assert ledger_by_request(rows, failed["id"]) == [("reserve", -2 * GPT_LOW), ("refund", 2 * GPT_LOW)], rows
    assert ledger_by_request(rows, blocked["id"]) == [("reserve", -GPT_LOW), ("refund", GPT_LOW)], rows
    assert ledger_by_request(rows, ok["id"]) == [("reserve", -2 * GPT_LOW), ("settle", 0)], rows
    assert len(fake_openai.image_requests()) == 3


def test_a_task_beyond_the_balance_is_charged_nothing(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    server = imgproxy.start(metered_env(fake_openai))
    key, secret = create_key(server, credits=GPT_LOW + 1)
    status, headers, raw = post(server, gpt_body(n=2), secret)
    if status == 202:  # accepted, then failed by the worker like the synchronous 402
        task = accepted(status, headers, raw)
        done = wait_task(server, task["id"], secret)
        assert done["status"] == "failed" and done["error"]["code"] == "insufficient_credits", done
        assert done["credits_used"] == 0, done
    else:
        assert_error_envelope(status, headers, raw, expected_status=402, code="insufficient_credits")
    assert fake_openai.requests == [], "nothing may reach the upstream without the credits for it"
    assert balance(server, secret) == GPT_LOW + 1
    assert_ledger_adds_up(Backend("sqlite").ledger(server, key["id"]), GPT_LOW + 1)


# ------------------------------------------------------------------------------------------
# cancel
# ------------------------------------------------------------------------------------------


def test_cancel_a_queued_task_at_once(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    receiver = WebhookReceiver().start()
    try:
        server = imgproxy.start(
            metered_env(fake_openai, IMGPROXY_TASK_WORKERS="1", IMGPROXY_FETCH_ALLOW_HOSTS=receiver.host_port)
        )
        key, secret = create_key(server, credits=100)
        fake_openai.delay_images(2.5)
        first = submit(server, gpt_body(), secret)
        wait_for(lambda: fake_openai.image_requests(), 10, "the first task to reach the upstream")
        second = submit(server, gpt_body(callback_url=receiver.url("/canceled")), secret)
        time.sleep(0.3)
        assert get_task(server, second["id"], secret)["status"] == "queued", "one worker: the second task must wait"
        status, _, raw = seed_poll(server, second["id"], secret)
        data = json.loads(raw)["data"]
        assert status == 200 and data["state"] == "pending" and data["resultUrls"] == [], data
        assert data["completeTime"] is None, data
        status, _, raw = seed_poll(server, first["id"], secret)
        assert json.loads(raw)["data"]["state"] == "processing", raw[:300]

        status, _, raw = cancel(server, second["id"], secret)
        assert status == 200, raw[:300]
        canceled = assert_task_object(json.loads(raw))
        # "At once" is what the answer says, not a stopwatch: the cancel's own answer is
        # already `canceled`, while the first task still holds the only worker.
        assert canceled["status"] == "canceled", f"a queued task is canceled at once: {canceled}"
        assert canceled["credits_used"] in (0, None) and canceled["result"] is None, canceled
        status, _, raw = seed_poll(server, second["id"], secret)
        assert json.loads(raw)["data"]["state"] == "canceled", raw[:300]

        assert wait_task(server, first["id"], secret)["status"] == "succeeded"
        time.sleep(0.8)  # the single worker is free again: it must not run the canceled task
        assert len(fake_openai.image_requests()) == 1, "a canceled task must never reach the upstream"
        assert get_task(server, second["id"], secret)["status"] == "canceled"
        assert balance(server, secret) == 100 - GPT_LOW

        # Its webhook says canceled.
        (delivery,) = receiver.wait_accepted(1, 10, "/canceled")
        assert delivery.json["type"] == "image.task.canceled" and delivery.json["data"]["id"] == second["id"], delivery.json
        rows = Backend("sqlite").ledger(server, key["id"])
        assert_ledger_adds_up(rows, 100 - GPT_LOW)
        assert ledger_by_request(rows, second["id"]) == [], f"a task canceled while queued was never charged: {rows}"
    finally:
        receiver.stop()


def test_cancel_a_running_task_drops_the_upstream_call_and_refunds(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI
) -> None:
    server = imgproxy.start(metered_env(fake_openai))
    key, secret = create_key(server, credits=100)
    # Long enough that "canceled" can only come from the cancel, however slow the machine.
    fake_openai.delay_images(15)
    fake_port = int(fake_openai.url.rsplit(":", 1)[1])
    task = submit(server, gpt_body(), secret)
    wait_for(lambda: fake_openai.image_requests(), 10, "the task to reach the upstream")
    assert get_task(server, task["id"], secret)["status"] == "processing"
    assert balance(server, secret) == 100 - GPT_LOW, "a running task holds its reservation"
    assert fake_side_states(fake_port) == ["01"], f"one open upstream connection: {fake_side_states(fake_port)}"

    started = time.monotonic()
    status, _, raw = cancel(server, task["id"], secret)
    assert status == 200, raw[:300]
    assert assert_task_object(json.loads(raw))["status"] in ("processing", "canceled")
    done = wait_task(server, task["id"], secret, timeout=10)
    elapsed = time.monotonic() - started
    assert done["status"] == "canceled", done
    # Canceled well before the upstream's answer (15 s) could have finished it.
    assert elapsed < 10.0, f"a running task must be canceled within a heartbeat; it took {elapsed:.1f}s"
    assert done["result"] is None and done["credits_used"] in (0, None), done
    wait_for(lambda: balance(server, secret) == 100, 10, "the canceled task's refund")
    # imgproxy closed its upstream connection while the fake was still working.
    wait_for(lambda: "01" not in fake_side_states(fake_port), 10, "imgproxy to drop the upstream request")

    # Cancelling again changes nothing (no second refund).
    status, _, raw = cancel(server, task["id"], secret)
    assert status == 200 and json.loads(raw)["status"] == "canceled", raw[:300]

    # When the fake's (late) answer would have come, nothing changes.
    time.sleep(max(0.0, 15.5 - (time.monotonic() - started)))
    assert get_task(server, task["id"], secret)["status"] == "canceled"
    assert balance(server, secret) == 100
    rows = Backend("sqlite").ledger(server, key["id"])
    assert_ledger_adds_up(rows, 100)
    assert ledger_by_request(rows, task["id"]) == [("reserve", -GPT_LOW), ("refund", GPT_LOW)], rows
    assert len(fake_openai.image_requests()) == 1


# ------------------------------------------------------------------------------------------
# restarts
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sigterm", "kill-9"])
def test_restart_runs_queued_tasks_and_fails_interrupted_ones_once(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, how: str
) -> None:
    receiver = WebhookReceiver().start()
    try:
        # After a kill -9 the restarted process (a new instance) fails the dead one's tasks once
        # its lease (3 s here) expired; after a SIGTERM at once (the lease ends with the process).
        env = metered_env(
            fake_openai,
            IMGPROXY_TASK_WORKERS="2",
            IMGPROXY_FETCH_ALLOW_HOSTS=receiver.host_port,
            IMGPROXY_INSTANCE_LEASE_SECS="3",
        )
        server = imgproxy.start(env)
        key, secret = create_key(server, credits=100)
        fake_openai.delay_images(8)
        tasks = [submit(server, gpt_body(callback_url=receiver.url(f"/t{i}")), secret) for i in range(5)]
        ids = [t["id"] for t in tasks]
        wait_for(lambda: len(fake_openai.image_requests()) == 2, 10, "two tasks to reach the upstream")
        time.sleep(0.3)
        states = {i: get_task(server, i, secret)["status"] for i in ids}
        running = [i for i in ids if states[i] == "processing"]
        queued = [i for i in ids if states[i] == "queued"]
        assert len(running) == 2 and len(queued) == 3, states
        assert balance(server, secret) == 100 - 2 * GPT_LOW

        if how == "sigterm":
            server.stop()
        else:
            kill_9(server)
        fake_openai.delay_images(0)
        restarted = imgproxy.start(env, data_dir=server.data_dir, port=server.port)

        final = {i: wait_task(restarted, i, secret) for i in ids}
        for i in running:
            assert final[i]["status"] == "failed", final[i]
            assert final[i]["error"]["code"] == "interrupted", final[i]
            assert final[i]["credits_used"] == 0 and final[i]["result"] is None, final[i]
        for i in queued:
            assert final[i]["status"] == "succeeded" and final[i]["credits_used"] == GPT_LOW, final[i]
            fetch_image(result_urls(final[i])[0])
        wait_for(lambda: balance(restarted, secret) == 100 - 3 * GPT_LOW, 5, "the interrupted tasks' refunds")

        # Each task ran upstream once at most: 2 interrupted calls + 3 after the restart.
        prompts = upstream_prompts(fake_openai)
        assert len(prompts) == 5 and len(set(prompts)) == 5, prompts
        # Each task's terminal state is delivered exactly once.
        deliveries = receiver.wait_accepted(5, 15)
        time.sleep(1.0)
        deliveries = receiver.accepted()
        by_path = {d.path: d for d in deliveries}
        assert len(deliveries) == 5 and len(by_path) == 5, [(d.path, d.json["type"]) for d in deliveries]
        for index, task_id in enumerate(ids):
            payload = by_path[f"/t{index}"].json
            assert payload["data"]["id"] == task_id
            assert payload["type"] == f"image.task.{final[task_id]['status']}", payload["type"]

        # A second restart changes nothing.
        again = imgproxy.restart(restarted)
        time.sleep(1.0)
        assert {i: get_task(again, i, secret)["status"] for i in ids} == {i: final[i]["status"] for i in ids}
        assert balance(again, secret) == 100 - 3 * GPT_LOW
        assert len(fake_openai.requests) == 5 and len(receiver.accepted()) == 5
        rows = Backend("sqlite").ledger(again, key["id"])
        assert_ledger_adds_up(rows, 100 - 3 * GPT_LOW)
        for i in running:
            assert ledger_by_request(rows, i) == [("reserve", -GPT_LOW), ("refund", GPT_LOW)], rows
        for i in queued:
            assert ledger_by_request(rows, i) == [("reserve", -GPT_LOW), ("settle", 0)], rows
        assert sorted(row[0] for row in sqlite_tasks(again)) == sorted(ids)
    finally:
        receiver.stop()


# ------------------------------------------------------------------------------------------
# several instances on one Postgres
# ------------------------------------------------------------------------------------------


def test_two_instances_on_one_postgres_run_each_task_once(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, postgres_url: str
) -> None:
    backend = Backend("postgres", postgres_url)
    env = metered_env(fake_openai, IMGPROXY_DATABASE_URL=postgres_url)
    first = imgproxy.start(env)
    second = imgproxy.start(env)
    key, secret = create_key(first, credits=200)
    fake_openai.delay_images(0.4)

    def one(index: int) -> dict[str, Any]:
        return submit((first, second)[index % 2], gpt_body(), secret)

    with ThreadPoolExecutor(max_workers=8) as pool:
        tasks = list(pool.map(one, range(20)))
    ids = [t["id"] for t in tasks]
    assert len(set(ids)) == 20
    final = {i: wait_task((first, second)[n % 2], i, secret, timeout=30) for n, i in enumerate(ids)}
    assert all(t["status"] == "succeeded" and t["credits_used"] == GPT_LOW for t in final.values()), final
    # Either instance sees every task.
    assert get_task(second, ids[0], secret)["status"] == "succeeded"
    assert get_task(first, ids[1], secret)["status"] == "succeeded"
    time.sleep(0.5)
    prompts = upstream_prompts(fake_openai)
    assert len(prompts) == 20 and len(set(prompts)) == 20, f"{len(prompts)} upstream calls for 20 tasks"
    assert balance(first, secret) == 200 - 20 * GPT_LOW
    rows = backend.ledger(first, key["id"])
    assert_ledger_adds_up(rows, 200 - 20 * GPT_LOW)
    for i in ids:
        assert ledger_by_request(rows, i) == [("reserve", -GPT_LOW), ("settle", 0)], (i, rows)

    # A cancel sent to the other instance stops a running task within a heartbeat.
    fake_openai.delay_images(20)
    before = len(fake_openai.requests)
    slow = submit(first, gpt_body(), secret)
    wait_for(lambda: len(fake_openai.requests) > before, 10, "the slow task to reach the upstream")
    running = get_task(second, slow["id"], secret)
    assert running["status"] == "processing", running
    started = time.monotonic()
    status, _, raw = cancel(second, slow["id"], secret)
    assert status == 200, raw[:300]
    done = wait_task(first, slow["id"], secret, timeout=15)
    assert done["status"] == "canceled", done
    # Well before the upstream's 20 s answer: the cancel stopped it, not the task's end.
    elapsed = time.monotonic() - started
    assert elapsed < 15.0, f"a cancel through another instance must stop the task within a heartbeat ({elapsed:.1f}s)"
    wait_for(lambda: balance(second, secret) == 200 - 20 * GPT_LOW, 10, "the canceled task's refund")


def test_a_dead_instances_task_is_failed_by_another_after_the_silence(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, postgres_url: str
) -> None:
    backend = Backend("postgres", postgres_url)
    env = metered_env(fake_openai, IMGPROXY_DATABASE_URL=postgres_url, IMGPROXY_INSTANCE_LEASE_SECS="2")
    doomed = imgproxy.start(env)
    key, secret = create_key(doomed, credits=50)
    fake_openai.delay_images(20)
    task = submit(doomed, gpt_body(), secret)
    wait_for(lambda: fake_openai.image_requests(), 10, "the task to reach the upstream")
    survivor = imgproxy.start(env)
    assert get_task(survivor, task["id"], secret)["status"] == "processing"

    # While its instance is alive (beating), the other one leaves it alone.
    time.sleep(3.0)
    assert get_task(survivor, task["id"], secret)["status"] == "processing", "a live instance's task was failed"
    assert balance(survivor, secret) == 50 - GPT_LOW

    kill_9(doomed)
    killed = time.monotonic()
    done = wait_task(survivor, task["id"], secret, timeout=16)
    elapsed = time.monotonic() - killed
    assert done["status"] == "failed" and done["error"]["code"] == "interrupted", done
    # Not before the lease has run out; the upper bound only says "well before the upstream's
    # 20 s answer", which a loaded machine still meets.
    assert 1.0 <= elapsed <= 16.0, f"failed {elapsed:.1f}s after the kill (lease 2 s)"
    assert done["credits_used"] == 0, done
    wait_for(lambda: balance(survivor, secret) == 50, 3, "the abandoned task's refund")
    rows = backend.ledger(survivor, key["id"])
    assert_ledger_adds_up(rows, 50)
    assert ledger_by_request(rows, task["id"]) == [("reserve", -GPT_LOW), ("refund", GPT_LOW)], rows

    # Nothing more happens later, and new tasks still run on the survivor.
    fake_openai.delay_images(0)
    again = submit(survivor, gpt_body(), secret)
    assert wait_task(survivor, again["id"], secret)["status"] == "succeeded"
    assert get_task(survivor, task["id"], secret)["status"] == "failed"
    assert balance(survivor, secret) == 50 - GPT_LOW
    assert len(fake_openai.image_requests()) == 2


# ------------------------------------------------------------------------------------------
# webhooks
# ------------------------------------------------------------------------------------------


def webhook_secret(server: Server, secret: str | None = None) -> str:
    status, _, raw = http("GET", f"{server.url}/v1/webhooks/secret", headers=auth(secret))
    assert status == 200, raw[:300]
    value = json.loads(raw)["secret"]
    assert isinstance(value, str) and value.startswith("whsec_"), value
    return value


def test_webhooks_retry_then_deliver_once_signed_and_give_up_after_the_window(imgproxy: ImgproxyFactory) -> None:
    up = WebhookReceiver().start()
    down = WebhookReceiver()  # never listening
    try:
        server = imgproxy.start(
            {
                "IMGPROXY_MASTER_KEY": MASTER_KEY,
                "IMGPROXY_FETCH_ALLOW_HOSTS": f"{up.host_port},{down.host_port}",
                "IMGPROXY_WEBHOOK_WINDOW_SECS": "5",
            }
        )
        _, secret = create_key(server, credits=10)
        signing = webhook_secret(server, secret)
        assert webhook_secret(server, secret) == signing, "the secret is stable"
        assert webhook_secret(server, MASTER_KEY) != signing, "each tenant has its own secret"

        up.then(500, 503)
        flaky = submit(server, placeholder_body(callback_url=up.url("/flaky")), secret)
        lost = submit(server, placeholder_body(callback_url=down.url("/lost")), secret)
        assert flaky["callback_url"] == up.url("/flaky")

        (delivery,) = up.wait_accepted(1, 10, "/flaky")
        time.sleep(1.5)  # no more attempts after the accepted one
        attempts = up.received("/flaky")
        assert [a.answered for a in attempts] == [500, 503, 200], [a.answered for a in attempts]
        ids = {a.webhook_id for a in attempts}
        assert ids == {f"msg_{flaky['id']}"}, f"the same webhook-id on every attempt: {ids}"
        gaps = [attempts[1].at - attempts[0].at, attempts[2].at - attempts[1].at]
        # The backoff is a minimum spacing (~1 s, then ~2 s): a loaded machine may stretch a
        # gap but never shorten it, so the upper bound is only a generous sanity check.
        assert gaps[0] >= 0.8 and gaps[1] >= 1.8, f"retries after {gaps}, expected at least ~1 s then ~2 s"
        assert max(gaps) < 10.0, f"retries after {gaps}: the backoff is seconds, not tens of seconds"
        for attempt in attempts:
            verify(signing, attempt)
            assert attempt.headers.get("content-type", "").startswith("application/json"), attempt.headers
        payload = delivery.json
        assert set(payload) == {"type", "timestamp", "data"}, payload
        assert payload["type"] == "image.task.succeeded" and isinstance(payload["timestamp"], int), payload
        data = assert_task_object(payload["data"])
        assert data["id"] == flaky["id"] and data["status"] == "succeeded", data
        fetch_image(result_urls(data)[0])
        # A forged or altered body does not verify.
        with pytest.raises(AssertionError):
            verify(signing, type(delivery)(delivery.at, delivery.path, delivery.headers, delivery.body + b" ", 200))

        task = wait_for(
            lambda: (t := get_task(server, flaky["id"], secret))["webhook"] and t["webhook"]["status"] == "delivered" and t,
            15, "the delivery to be recorded",
        )
        assert task["webhook"]["attempts"] == 3, task["webhook"]
        assert isinstance(task["webhook"]["finished_at"], int), task["webhook"]

        # The receiver that is down: attempts at ~0, 1, 3 s; the next (7 s) is past the 5 s window.
        gone = wait_for(
            lambda: (t := get_task(server, lost["id"], secret))["webhook"] and t["webhook"]["status"] == "failed" and t,
            20, "the delivery to a dead receiver to be given up",
        )
        hook = gone["webhook"]
        assert gone["status"] == "succeeded", "the webhook's failure does not change the task"
        # 3 on time; a loaded machine that stretches the backoff may fit only 2 in the window.
        assert hook["attempts"] in (2, 3), hook
        assert isinstance(hook["last_error"], str) and hook["last_error"], hook
        assert isinstance(hook["finished_at"], int), hook
        assert down.received() == []
        time.sleep(1.0)
        assert get_task(server, lost["id"], secret)["webhook"]["attempts"] == hook["attempts"], "no attempt after giving up"
    finally:
        up.stop()


def test_a_pending_delivery_survives_a_restart(imgproxy: ImgproxyFactory) -> None:
    receiver = WebhookReceiver()  # down at first
    try:
        env = {"IMGPROXY_FETCH_ALLOW_HOSTS": receiver.host_port}
        server = imgproxy.start(env)
        signing = webhook_secret(server)
        task = submit(server, placeholder_body(callback_url=receiver.url("/late")))
        pending = wait_for(
            lambda: (t := get_task(server, task["id"]))["webhook"] and t["webhook"]["attempts"] >= 1 and t,
            10, "a first (failed) attempt",
        )
        assert pending["status"] == "succeeded" and pending["webhook"]["status"] == "pending", pending
        assert pending["webhook"]["last_error"], pending["webhook"]
        server.stop()

        receiver.start()
        restarted = imgproxy.start(env, data_dir=server.data_dir, port=server.port)
        (delivery,) = receiver.wait_accepted(1, 12)
        time.sleep(1.0)
        assert len(receiver.received()) == 1, "delivered once after the restart"
        verify(webhook_secret(restarted), delivery)
        assert webhook_secret(restarted) == signing, "the secret survives a restart"
        assert delivery.webhook_id == f"msg_{task['id']}"
        assert delivery.json["type"] == "image.task.succeeded" and delivery.json["data"]["id"] == task["id"]
        done = get_task(restarted, task["id"])
        assert done["webhook"]["status"] == "delivered" and done["webhook"]["attempts"] >= 2, done["webhook"]
    finally:
        receiver.stop()
