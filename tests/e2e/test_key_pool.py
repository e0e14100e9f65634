"""Key pools (issue 14): a provider's key variable holding several keys, one of them revoked
upstream. Every request is served through the other key, the revoked one is tried once and
then left out, and the operator sees it by fingerprint in `/readyz` and `/metrics`, never the
key itself."""

from __future__ import annotations

import hashlib
import json

from conftest import ImgproxyFactory
from fake_openai import FakeOpenAI
from helpers import http
from prometheus_client.parser import text_string_to_metric_families

MASTER_KEY = "imgproxy-e2e-key-pool-master"
REVOKED = "sk-e2e-revoked-key-0001"
GOOD = "sk-e2e-good-key-0002"


def fingerprint(key: str) -> str:
    """What imgproxy names a key by: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def test_a_rejected_key_is_left_out_and_every_request_succeeds_through_the_other(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reject_key(REVOKED)
    server = imgproxy.start(
        {
            "OPENAI_API_KEY": f"{REVOKED},{GOOD}",
            "OPENAI_BASE_URL": f"{fake_openai.url}/v1",
            "IMGPROXY_MASTER_KEY": MASTER_KEY,
        }
    )
    master = {"Authorization": f"Bearer {MASTER_KEY}"}

    for index in range(4):
        body = {"model": "gpt-image-2", "prompt": f"a sea otter #{index}", "quality": "low", "size": "1024x1024"}
        status, _, raw = http("POST", f"{server.url}/v1/images/generations", json_body=body, headers=master)
        assert status == 200, raw[:300]
        assert json.loads(raw)["data"][0]["b64_json"]

    # The revoked key was tried by the first request only, which moved on to the good key.
    sent_with = [r.headers.get("authorization") for r in fake_openai.image_requests()]
    assert sent_with == [f"Bearer {REVOKED}"] + [f"Bearer {GOOD}"] * 4

    status, _, raw = http("GET", f"{server.url}/readyz", headers=master)
    readiness = json.loads(raw)
    assert (status, readiness["status"]) == (200, "ready"), readiness
    assert readiness["upstream_keys"]["openai"] == [
        {"fingerprint": fingerprint(REVOKED), "state": "disabled", "reason": "unauthorized", "in_flight": 0},
        {"fingerprint": fingerprint(GOOD), "state": "live", "in_flight": 0},
    ]
    # Anyone else sees readiness without the keys.
    status, _, raw = http("GET", f"{server.url}/readyz")
    assert status == 200 and "upstream_keys" not in json.loads(raw)

    status, _, raw = http("GET", f"{server.url}/metrics", headers=master)
    assert status == 200, raw[:300]
    samples = {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(raw.decode())
        for sample in family.samples
        if sample.name == "imgproxy_upstream_keys"
    }
    assert samples[frozenset({"provider": "openai", "state": "disabled"}.items())] == 1
    assert samples[frozenset({"provider": "openai", "state": "live"}.items())] == 1

    log = server.log()
    assert fingerprint(REVOKED) in log, "the warning names the key by its fingerprint"
    assert REVOKED not in log and GOOD not in log
