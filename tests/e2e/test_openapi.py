"""`GET /openapi.json` against the real binary: served without a key, OpenAPI 3.1, and fuzzed by
schemathesis (installed by tests/run), which must find nothing: no 5xx, every status, content
type, header and body as documented, schema-violating input refused, auth enforced, undocumented
methods 405.

The run is bounded and reproducible: a fixed seed, a fixed number of examples per operation, one
worker, no example database. `positive_data_acceptance` is the one check left out: the generic
request schema admits requests that a given model refuses (its own schema is `GET
/v1/models/{id}`'s `schema`), and refusing those with a 400 naming the parameter is right.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ImgproxyFactory
from helpers import http

MASTER_KEY = "mk-openapi-0123456789"
SEED = 20261204
MAX_EXAMPLES = 25
CHECKS_LEFT_OUT = ["positive_data_acceptance"]


def test_the_document_is_openapi_3_1_and_needs_no_key(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    status, headers, body = http("GET", f"{server.url}/openapi.json")
    assert status == 200, body[:300]
    assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert document["openapi"].startswith("3.1."), document["openapi"]
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    generate = document["paths"]["/v1/images/generations"]["post"]
    assert generate["security"] == [{"bearer": []}]
    assert generate["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorEnvelope"
    }
    assert set(generate["requestBody"]["content"]) == {"application/json"}
    assert document["paths"]["/healthz"]["get"]["security"] == []


def test_schemathesis_finds_nothing(imgproxy: ImgproxyFactory, tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).parent / "schemathesis"
    if not schemathesis.is_file():
        pytest.fail(f"schemathesis is not installed at {schemathesis}: tests/run installs it")
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    report = tmp_path / "schemathesis.json"
    command = [
        str(schemathesis),
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {MASTER_KEY}",
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(CHECKS_LEFT_OUT),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "60",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    # Its working files (if any) go to the test's directory, not the repository.
    run = subprocess.run(
        command, cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=900
    )
    output = run.stdout[-30000:] + run.stderr[-5000:]
    assert run.returncode == 0, output
    result = json.loads(report.read_text())
    assert result["complete"] and result["failures"] == [] and result["errors"] == [], output

    document = json.loads(http("GET", f"{server.url}/openapi.json")[2])
    # Every operation but `GET /openapi.json` itself, which schemathesis leaves out of a run
    # that reads the schema from it.
    operations = sum(len(item) for item in document["paths"].values()) - 1
    assert result["operations"]["total"] == operations, result["operations"]
    assert result["operations"]["tested"] == operations, result["operations"]
    for phase in ("examples", "coverage", "fuzzing", "stateful"):
        assert result["phases"][phase]["status"] == "success", (phase, result["phases"])
    assert result["test_cases"]["with_failures"] == 0, result["test_cases"]
    assert result["test_cases"]["generated"] >= operations * 10, result["test_cases"]
    # The documented example reached the model and made an image, not only 4xx.
    assert result["valid_rates"]["POST /v1/images/generations"]["examples"]["accepted"] >= 1, output
    print(
        f"schemathesis: {result['operations']['tested']} operations, "
        f"{result['test_cases']['generated']} test cases, seed {SEED}, "
        f"{result['running_time']:.1f}s"
    )
