"""A task cut off mid-flight on an asynchronous upstream (Replicate, BFL) is resumed after a
restart: the new run waits for the job the old one started, never submits a second one, and
the key pays once. The restarted process is a new instance: it takes the task over once the
killed one's lease (3 s here) has expired."""

from __future__ import annotations

import json
import time
from typing import Any

from conftest import ImgproxyFactory, Server
import pytest
from fake_upstreams import FakeBfl, FakeReplicate
from helpers import http
from test_credits import MASTER_KEY, balance, bearer, create_key

REPLICATE_TOKEN = "r8_e2e_resume_token_0123"
BFL_KEY = "bfl-e2e-resume-key-0123"


class Upstream:
    """One asynchronous fake whose job stays running until `finish()`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "replicate":
            self.fake: Any = FakeReplicate(REPLICATE_TOKEN, processing_polls=10**6)
            self.model = "flux-1.1-pro"
        else:
            self.fake = FakeBfl(BFL_KEY, pending_polls=10**6)
            self.model = "flux-pro-1.1"

    def env(self) -> dict[str, str]:
        if self.kind == "replicate":
            return {"REPLICATE_API_TOKEN": REPLICATE_TOKEN, "REPLICATE_BASE_URL": self.fake.url}
        return {"BFL_API_KEY": BFL_KEY, "BFL_BASE_URL": self.fake.api_url}

    def submits(self) -> int:
        calls = self.fake.create_calls() if self.kind == "replicate" else self.fake.submit_calls()
        return len(calls)

    def polls(self) -> int:
        if self.kind == "replicate":
            return len(self.fake.poll_calls())
        return len([r for r in self.fake.requests if r.listener == "api" and r.method == "GET"])

    def finish(self) -> None:
        with self.fake.lock:
            jobs = self.fake.predictions if self.kind == "replicate" else self.fake.tasks
            for job in jobs.values():
                job.polls_left = 0

    def outputs(self) -> list[bytes]:
        return self.fake.outputs if self.kind == "replicate" else self.fake.samples


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


@pytest.mark.parametrize("kind", ["replicate", "bfl"])
def test_an_interrupted_task_resumes_its_upstream_job_after_a_restart(imgproxy: ImgproxyFactory, kind: str) -> None:
    upstream = Upstream(kind)
    with upstream.fake:
        env = {"IMGPROXY_MASTER_KEY": MASTER_KEY, "IMGPROXY_INSTANCE_LEASE_SECS": "3", **upstream.env()}
        server = imgproxy.start(env)
        _, secret = create_key(server, credits=100)
        status, _, raw = http(
            "GET", f"{server.url}/v1/models/{upstream.model}", headers=bearer(MASTER_KEY)
        )
        price = json.loads(raw)["pricing"]["per_image"]
        status, headers, raw = http(
            "POST",
            f"{server.url}/v1/images/generations",
            json_body={"model": upstream.model, "prompt": "a resumed lighthouse", "async": True},
            headers=bearer(secret),
        )
        assert status == 202, raw[:300]
        task_id = json.loads(raw)["id"]
        wait_for(lambda: upstream.submits() == 1, 15, "the upstream job to be submitted")
        # The job is recorded right after the submit; polls show it is running.
        wait_for(lambda: upstream.polls() >= 1, 15, "the first poll")
        assert task(server, secret, task_id)["status"] == "processing"
        assert balance(server, secret) == 100 - price, "reserved while running"

        assert server.proc is not None
        server.proc.kill()  # SIGKILL: the run ends without a word
        server.proc.wait(timeout=10)
        server.exit_code = server.proc.returncode
        upstream.finish()  # the upstream finishes while imgproxy is down

        restarted = imgproxy.start(env, data_dir=server.data_dir, port=server.port)
        done = wait_for(
            lambda: (t := task(restarted, secret, task_id))["status"] not in ("queued", "processing") and t,
            30,
            "the resumed task to finish",
        )
        assert done["status"] == "succeeded", done
        assert done["result"]["data"] and done["credits_used"] == price, done
        status, _, image = http("GET", done["result"]["data"][0]["url"])
        assert status == 200 and image == upstream.outputs()[0], "the resumed task returns the upstream's image"
        assert upstream.submits() == 1, "resuming never submits a second job"
        assert balance(restarted, secret) == 100 - price, "charged exactly once"
        assert "resuming an interrupted task" in restarted.log()
        assert not upstream.fake.problems, upstream.fake.problems
