"""A task cut off mid-flight on an asynchronous upstream (Replicate) is resumed after a restart:
the new run waits for the prediction the old one started, never creates a second one, and the
key pays once."""

from __future__ import annotations

import json
import time
from typing import Any

from conftest import ImgproxyFactory, Server
from fake_upstreams import FakeReplicate
from helpers import http
from test_credits import MASTER_KEY, balance, bearer, create_key

REPLICATE_TOKEN = "r8_e2e_resume_token_0123"


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def task(server: Server, secret: str, task_id: str) -> dict[str, Any]:
    status, _, raw = http("GET", f"{server.url}/v1/tasks/{task_id}", headers=bearer(secret))
    assert status == 200, raw[:300]
    return json.loads(raw)


def test_an_interrupted_task_resumes_its_upstream_prediction_after_a_restart(imgproxy: ImgproxyFactory) -> None:
    with FakeReplicate(REPLICATE_TOKEN, processing_polls=10**6) as replicate:
        env = {
            "IMGPROXY_MASTER_KEY": MASTER_KEY,
            "REPLICATE_API_TOKEN": REPLICATE_TOKEN,
            "REPLICATE_BASE_URL": replicate.url,
        }
        server = imgproxy.start(env)
        _, secret = create_key(server, credits=100)
        status, _, raw = http(
            "GET", f"{server.url}/v1/models/flux-1.1-pro", headers=bearer(MASTER_KEY)
        )
        price = json.loads(raw)["pricing"]["per_image"]
        status, headers, raw = http(
            "POST",
            f"{server.url}/v1/images/generations",
            json_body={"model": "flux-1.1-pro", "prompt": "a resumed lighthouse", "async": True},
            headers=bearer(secret),
        )
        assert status == 202, raw[:300]
        task_id = json.loads(raw)["id"]
        wait_for(lambda: len(replicate.create_calls()) == 1, 15, "the prediction to be created")
        # The job is recorded right after the create; polls show it is running.
        wait_for(lambda: len(replicate.poll_calls()) >= 1, 15, "the first poll")
        assert task(server, secret, task_id)["status"] == "processing"
        assert balance(server, secret) == 100 - price, "reserved while running"

        assert server.proc is not None
        server.proc.kill()  # SIGKILL: the run ends without a word
        server.proc.wait(timeout=10)
        server.exit_code = server.proc.returncode
        with replicate.lock:
            for prediction in replicate.predictions.values():
                prediction.polls_left = 0  # the upstream finishes while imgproxy is down

        restarted = imgproxy.start(env, data_dir=server.data_dir, port=server.port)
        done = wait_for(
            lambda: (t := task(restarted, secret, task_id))["status"] not in ("queued", "processing") and t,
            30,
            "the resumed task to finish",
        )
        assert done["status"] == "succeeded", done
        assert done["result"]["data"] and done["credits_used"] == price, done
        status, _, image = http("GET", done["result"]["data"][0]["url"])
        assert status == 200 and image == replicate.outputs[0], "the resumed task returns the upstream's image"
        assert len(replicate.create_calls()) == 1, "resuming never creates a second prediction"
        assert balance(restarted, secret) == 100 - price, "charged exactly once"
        assert "resuming an interrupted task" in restarted.log()
        assert not replicate.problems, replicate.problems
