"""Operating imgproxy (issue 13): Prometheus metrics, readiness, request ids and logs, against
the real binary.

Checked: after a scripted mix (a miss, a hit, a 400, an upstream 500, a task with a webhook),
`/metrics` parses with the Prometheus text parser (prometheus_client) and every counter moved
by exactly what was done, histogram counts equal the requests; `/metrics` behind a token and on
its own address; `/readyz` turns 503 naming the database while Postgres refuses connections and
200 again once it accepts them, without a restart; the official Python SDK's `_request_id`
shows the `x-request-id` the server sends, which is also in the access log line and the ledger
row of that request; an incoming sane `X-Request-Id` is echoed, an odd one replaced, errors and
streams carry one; with `--log-format json` every log line is one JSON object, and at `trace`
no secret (master key, upstream key, issued key) is in any log line.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import ImgproxyFactory, Server, free_port, psql
from fake_openai import FakeOpenAI, server_error
from helpers import http
from prometheus_client.parser import text_string_to_metric_families
from test_tasks import MASTER_KEY, auth, metered_env, wait_task
from webhooks import WebhookReceiver

GENERATIONS = "/v1/images/generations"


def scrape(server: Server, token: str | None = None, url: str | None = None) -> dict[tuple[str, frozenset], float]:
    """Every sample of `/metrics`, parsed by Prometheus's own text parser: (name, labels) → value."""
    status, headers, raw = http("GET", url or f"{server.url}/metrics", headers=auth(token))
    assert status == 200, f"/metrics -> {status}: {raw[:300]!r}"
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    samples = {}
    for family in text_string_to_metric_families(raw.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-image-2", "prompt": prompt, "quality": "low", "size": "1024x1024", **extra}


def test_metrics_move_by_exactly_what_was_done(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    receiver = WebhookReceiver().start()
    try:
        server = imgproxy.start(metered_env(fake_openai, IMGPROXY_FETCH_ALLOW_HOSTS=receiver.host_port))
        master = auth(MASTER_KEY)
        status, _, raw = http("POST", f"{server.url}/v1/admin/keys", json_body={"name": "m", "credits": 1000}, headers=master)
        assert status == 201, raw
        secret = json.loads(raw)["secret"]
        key = auth(secret)
        before = scrape(server)

        prompt = f"a metered fox {secrets.token_hex(3)}"
        miss = http("POST", f"{server.url}{GENERATIONS}", json_body=body(prompt), headers=key, timeout=30)
        assert miss[0] == 200 and miss[1]["x-cache-status"].startswith("MISS"), miss[:2]
        hit = http("POST", f"{server.url}{GENERATIONS}", json_body=body(prompt), headers=key, timeout=30)
        assert hit[0] == 200 and hit[1]["x-cache-status"].startswith("HIT"), hit[:2]
        bad = http("POST", f"{server.url}{GENERATIONS}", json_body=body("x", size="3x3"), headers=key)
        assert bad[0] == 400, bad
        fake_openai.then(server_error())
        failed = http("POST", f"{server.url}{GENERATIONS}", json_body=body(f"fails {secrets.token_hex(3)}"), headers=key, timeout=30)
        assert failed[0] == 502, failed
        task_body = body(f"a task {secrets.token_hex(3)}", callback_url=receiver.url("/done"))
        submitted = http("POST", f"{server.url}{GENERATIONS}", json_body={**task_body, "async": True}, headers=key)
        assert submitted[0] == 202, submitted
        task = wait_task(server, json.loads(submitted[2])["id"], secret)
        assert task["status"] == "succeeded", task
        (delivery,) = receiver.wait_accepted(1, 20, "/done")
        # The task and its webhook name the request that submitted it.
        assert task["request_id"] == submitted[1]["x-request-id"], task
        assert delivery.json["data"]["request_id"] == submitted[1]["x-request-id"], delivery.json
        # The delivery is counted right after the receiver answered: give it a moment.
        deadline = time.monotonic() + 5
        while delta(before, scrape(server), "imgproxy_webhook_deliveries_total", outcome="delivered") < 1:
            assert time.monotonic() < deadline, "the webhook delivery was never counted"
            time.sleep(0.05)
        after = scrape(server)
    finally:
        receiver.stop()

    route = {"route": GENERATIONS, "method": "POST"}
    # Five requests to the route: miss, hit and task submission 2xx, one 4xx, one 5xx.
    assert delta(before, after, "imgproxy_http_requests_total", **route, status="2xx") == 3
    assert delta(before, after, "imgproxy_http_requests_total", **route, status="4xx") == 1
    assert delta(before, after, "imgproxy_http_requests_total", **route, status="5xx") == 1
    assert delta(before, after, "imgproxy_http_request_duration_seconds_count", **route) == 5
    assert delta(before, after, "imgproxy_gateway_overhead_seconds_count", route=GENERATIONS) == 5
    assert delta(before, after, "imgproxy_http_response_bytes_total", route=GENERATIONS) >= len(miss[2]) + len(hit[2])
    # Upstream: the miss and the task succeeded, the 500 failed; the hit and the 400 never went.
    upstream = {"provider": "openai", "model": "gpt-image-2"}
    assert delta(before, after, "imgproxy_upstream_requests_total", **upstream, outcome="ok") == 2
    assert delta(before, after, "imgproxy_upstream_requests_total", **upstream, outcome="failed") == 1
    assert delta(before, after, "imgproxy_upstream_duration_seconds_count", **upstream) == 3
    assert delta(before, after, "imgproxy_images_generated_total", model="gpt-image-2") == 2
    # Pixels as made: the fake upstream answers every size with the same small PNG.
    width, height = map(int, json.loads(miss[2])["size"].split("x"))
    assert delta(before, after, "imgproxy_output_pixels_total", model="gpt-image-2") == 2 * width * height
    # gpt-image-2 at quality=low costs 6 credits: the miss and the task paid, nothing else.
    assert delta(before, after, "imgproxy_credits_charged_total", model="gpt-image-2") == 12
    assert delta(before, after, "imgproxy_cache_lookups_total", result="hit") == 1
    assert delta(before, after, "imgproxy_cache_lookups_total", result="miss") == 3
    assert delta(before, after, "imgproxy_errors_total", fault="caller", kind="invalid_request") == 1
    assert delta(before, after, "imgproxy_errors_total", fault="provider", kind="upstream_error") == 1
    assert not any(name == "imgproxy_errors_total" and ("fault", "gateway") in labels for name, labels in after)
    assert delta(before, after, "imgproxy_tasks_total", state="queued") == 1
    assert delta(before, after, "imgproxy_tasks_total", state="succeeded") == 1
    assert delta(before, after, "imgproxy_webhook_deliveries_total", outcome="delivered") == 1
    assert value(after, "imgproxy_generations_in_flight", provider="openai") == 0
    assert value(after, "imgproxy_generations_queued", provider="openai") == 0
    # Labels are bounded: no raw paths, no key ids, no prompts.
    text = http("GET", f"{server.url}/metrics")[2].decode()
    assert prompt not in text and secret not in text and "key_id" not in text


def test_metrics_can_take_a_token_and_an_address_of_their_own(imgproxy: ImgproxyFactory) -> None:
    token = secrets.token_hex(16)
    port = free_port()
    server = imgproxy.start({"IMGPROXY_METRICS_TOKEN": token, "IMGPROXY_METRICS_LISTEN": f"127.0.0.1:{port}"})
    status, _, _ = http("GET", f"{server.url}/metrics")
    assert status == 404, "with its own address, /metrics is not on the API's"
    own = f"http://127.0.0.1:{port}/metrics"
    assert http("GET", own)[0] == 401
    assert http("GET", own, headers=auth("wrong-token-wrong-token"))[0] == 401
    samples = scrape(server, token, url=own)
    assert any(name == "imgproxy_http_requests_total" for name, _ in samples)


def test_readyz_follows_the_database_without_a_restart(imgproxy: ImgproxyFactory, postgres_url: str) -> None:  # noqa: F811
    server = imgproxy.start({"IMGPROXY_DATABASE_URL": postgres_url})
    status, _, raw = http("GET", f"{server.url}/readyz")
    assert status == 200, raw
    ready = json.loads(raw)
    assert ready["status"] == "ready" and ready["checks"] == {"database": "ok", "store": "ok", "models": "ok"}, ready
    admin, name = postgres_url.rsplit("/", 1)
    # Refuse new connections and end the open ones: the database is unreachable.
    psql(f"{admin}/postgres", f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false;\n"
          f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';\n")
    try:
        status, _, raw = http("GET", f"{server.url}/readyz", timeout=30)
        assert status == 503, raw
        down = json.loads(raw)
        assert down["status"] == "unready" and down["failed"] == ["database"], down
        assert down["checks"]["database"] == "failed" and down["checks"]["store"] == "ok", down
        assert http("GET", f"{server.url}/healthz")[0] == 200, "liveness does not look at the database"
    finally:
        psql(f"{admin}/postgres", f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true;\n")
    deadline = time.monotonic() + 15
    while True:
        status, _, raw = http("GET", f"{server.url}/readyz", timeout=30)
        if status == 200:
            break
        assert time.monotonic() < deadline, f"/readyz did not recover: {raw!r}"
        time.sleep(0.2)
    assert json.loads(raw)["status"] == "ready"


def access_lines(server: Server) -> list[dict[str, Any]]:
    """The JSON access-log lines of a server started with `--log-format json`."""
    lines = []
    for line in server.log().splitlines()[1:]:
        record = json.loads(line)
        if record.get("target") == "imgproxy::access":
            lines.append(record)
    return lines


def test_request_ids_reach_the_sdk_the_log_and_the_ledger(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY}, args=["--log-format", "json"])
    status, _, raw = http("POST", f"{server.url}/v1/admin/keys", json_body={"name": "ids", "credits": 100}, headers=auth(MASTER_KEY))
    assert status == 201, raw
    created = json.loads(raw)
    secret, key_id = created["secret"], created["key"]["id"]
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=secret, max_retries=0)
    result = client.images.generate(model="placeholder", prompt=f"an id {secrets.token_hex(3)}", size="16x16")
    request_id = result._request_id
    assert isinstance(request_id, str) and request_id.startswith("req_"), request_id
    # The ledger row of that request carries it.
    status, _, raw = http("GET", f"{server.url}/v1/credits", headers=auth(secret))
    assert status == 200, raw
    ledger = json.loads(raw)["recent"]
    assert {"reserve", "settle"} <= {row["kind"] for row in ledger if row["request_id"] == request_id}, ledger
    # An incoming sane id is echoed (and prefixes the charge's id); an odd one is replaced.
    status, headers, _ = http("POST", f"{server.url}{GENERATIONS}", headers={**auth(secret), "X-Request-Id": "trace-42:a/b"},
                              json_body={"model": "placeholder", "prompt": f"echo {secrets.token_hex(3)}", "size": "16x16"})
    assert status == 200 and headers["x-request-id"] == "trace-42:a/b", headers
    status, _, raw = http("GET", f"{server.url}/v1/credits", headers=auth(secret))
    assert any(str(row["request_id"]).startswith("trace-42:a/b~") for row in json.loads(raw)["recent"]), raw
    status, headers, _ = http("GET", f"{server.url}/v1/models", headers={**auth(secret), "X-Request-Id": "bad id \"quoted\""})
    assert status == 200 and headers["x-request-id"].startswith("req_"), headers
    # Errors and streams carry one too.
    try:
        client.images.generate(model="no-such-model", prompt="x")
        pytest.fail("an unknown model is an error")
    except openai.NotFoundError as error:
        assert error.request_id and error.request_id.startswith("req_"), error.request_id
    stream = client.images.generate(model="placeholder", prompt=f"streamed {secrets.token_hex(3)}", size="16x16", stream=True)
    assert stream.response.headers["x-request-id"].startswith("req_")
    list(stream)
    assert http("GET", f"{server.url}/nowhere")[1]["x-request-id"].startswith("req_")
    # The access log line of the SDK's request names it, the key, the model and the cost.
    (line,) = [r for r in access_lines(server) if r["span"]["request_id"] == request_id]
    assert line["status"] == 200 and line["route"] == GENERATIONS and line["model"] == "placeholder", line
    assert line["key_id"] == key_id, line
    assert line["credits"] == 1 and line["cache"].startswith("MISS") and line["bytes"] > 0, line


def test_json_logs_are_one_object_per_line_and_hold_no_secret(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    upstream_key = "sk-upstream-secret-" + secrets.token_hex(8)
    env = {"IMGPROXY_MASTER_KEY": MASTER_KEY, "OPENAI_API_KEY": upstream_key, "OPENAI_BASE_URL": f"{fake_openai.url}/v1", "RUST_LOG": "trace"}
    server = imgproxy.start(env, args=["--log-format", "json"])
    status, _, raw = http("POST", f"{server.url}/v1/admin/keys", json_body={"name": "logs", "credits": 100}, headers=auth(MASTER_KEY))
    assert status == 201, raw
    secret = json.loads(raw)["secret"]
    prompt = f"a secret-free prompt {secrets.token_hex(4)}"
    assert http("POST", f"{server.url}{GENERATIONS}", json_body=body(prompt), headers=auth(secret), timeout=30)[0] == 200
    assert http("POST", f"{server.url}{GENERATIONS}", json_body=body(prompt), headers=auth("ipk_wrong"), timeout=30)[0] == 401
    server.stop()
    lines = server.log().splitlines()[1:]
    assert len(lines) > 10, "trace logging logs"
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict) and "level" in record and "timestamp" in record, line
        assert "\x1b[" not in line, "no colour codes in a log file"
    log = "\n".join(lines)
    for leaked in (MASTER_KEY, upstream_key, secret, secret.split("_", 1)[-1]):
        assert leaked not in log, "a secret reached the log"
    access = access_lines(server)
    assert any(r["status"] == 401 for r in access) and all(prompt not in json.dumps(r) for r in access)


def test_config_check_prints_the_effective_configuration_without_secrets(tmp_path) -> None:
    from conftest import clean_env, imgproxy_bin

    config = tmp_path / "imgproxy.toml"
    config.write_text(
        'master_key = "mk-never-printed-1234"\n'
        'database_url = "postgres://app:pw-never-printed@127.0.0.1:5432/x"\n'
        "[server]\nshutdown_drain_secs = 7\n"
        '[metrics]\ntoken = "token-never-printed-1234"\n'
    )
    env = clean_env({"OPENAI_API_KEY": "sk-never-printed-5678"})
    done = subprocess.run([str(imgproxy_bin()), "config", "check", str(config)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["config_file"] == str(config)
    assert report["master_key"] == "(set)" and report["metrics"]["token"] == "(set)"
    assert report["database_url"] == "postgres://app:***@127.0.0.1:5432/x"
    assert report["server"]["shutdown_drain_secs"] == 7
    assert [p["name"] for p in report["providers"]] == ["openai"] and report["providers"][0]["api_key"] == "(set)"
    for leaked in ("mk-never-printed", "pw-never-printed", "token-never-printed", "sk-never-printed"):
        assert leaked not in done.stdout + done.stderr
    # A mistake names its file and its key, and the command fails.
    config.write_text("[server]\nmax_conections = 5\n")
    done = subprocess.run([str(imgproxy_bin()), "config", "check", str(config)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and done.stdout == ""
    assert str(config) in done.stderr and "server.max_conections" in done.stderr, done.stderr


def test_shutdown_waits_for_requests_in_flight_up_to_the_drain_timeout(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    import threading

    server = imgproxy.start({"OPENAI_API_KEY": "sk-drain", "OPENAI_BASE_URL": f"{fake_openai.url}/v1",
                             "IMGPROXY_SHUTDOWN_DRAIN_SECS": "1"})
    fake_openai.delay_images(30)
    outcome: list[Any] = []
    slow = threading.Thread(target=lambda: outcome.append(
        http("POST", f"{server.url}{GENERATIONS}", json_body=body(f"slow {secrets.token_hex(3)}"), timeout=60)))
    slow.start()
    deadline = time.monotonic() + 10
    while not fake_openai.image_requests():
        assert time.monotonic() < deadline, "the slow request never reached the upstream"
        time.sleep(0.05)
    started = time.monotonic()
    assert server.stop(timeout=5) == 0
    took = time.monotonic() - started
    assert 0.9 <= took < 4, f"a 1 s drain took {took:.2f} s"
    slow.join(10)
    assert "requests still in flight when the drain timed out are abandoned" in server.log()


def installed_readme_commands() -> list[str]:
    """The `imgproxy ...` lines of the README's shell blocks, in order (comments cut)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    commands, in_sh = [], False
    for line in readme.splitlines():
        if line.startswith("```"):
            in_sh = line.strip() == "```sh"
            continue
        if in_sh and line.startswith("imgproxy "):
            commands.append(line.split("  #", 1)[0].strip())
    return commands


def test_the_readme_install_step_puts_imgproxy_on_the_path(tmp_path) -> None:
    """`cargo install --locked --path imgproxy-server`, as the README says (in debug mode and with
    the build's own target dir, so that it reuses what `tests/run` built), then every
    `imgproxy ...` example of the README but `serve` runs as written from the PATH."""
    import shutil

    from conftest import REPO, clean_env, imgproxy_bin

    commands = installed_readme_commands()
    assert "cargo install --locked --path imgproxy-server" in (REPO / "README.md").read_text()
    assert any(c.startswith("imgproxy keys create") for c in commands) and any(c.startswith("imgproxy sign-url") for c in commands)
    root = tmp_path / "root"
    target = imgproxy_bin().parent.parent
    env = clean_env({"CARGO_TARGET_DIR": str(target)})
    done = subprocess.run(["cargo", "install", "--locked", "--debug", "--path", "imgproxy-server", "--root", str(root)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    env = clean_env({"PATH": f"{root / 'bin'}:{os.environ['PATH']}"})
    assert shutil.which("imgproxy", path=env["PATH"]) == str(root / "bin" / "imgproxy")
    work = tmp_path / "work"
    work.mkdir()
    key_id = None
    for command in commands:
        if command.startswith("imgproxy serve"):
            continue
        if "<id>" in command:
            assert key_id, f"{command!r} needs a key made by an earlier example"
            command = command.replace("<id>", key_id)
        done = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{command!r} failed: {done.stderr[-2000:]}"
        if command.startswith("imgproxy keys create"):
            key_id = json.loads(done.stdout)["key"]["id"]
        if command.startswith("imgproxy sign-url"):
            assert "sig=" in done.stdout and f"kid={key_id}" in done.stdout, done.stdout
