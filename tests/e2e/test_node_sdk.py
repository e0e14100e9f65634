"""The official OpenAI Node SDK (tests/e2e/node, installed by tests/run) against the real binary:
its `request_id` shows the server's `x-request-id`, on successes and errors alike."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Server, clean_env

NODE_DIR = Path(__file__).resolve().parent / "node"


def test_the_node_sdk_sees_the_request_id(server: Server) -> None:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("node and tests/e2e/node/node_modules are needed: tests/run installs them")
    done = subprocess.run(
        ["node", "request_id.mjs", f"{server.url}/v1", "sk-anything", "a node fox"],
        cwd=NODE_DIR, env=clean_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["images"] == 1
    assert seen["request_id"] and seen["request_id"] == seen["header"], seen
    assert seen["request_id"].startswith("req_"), seen
    assert seen["parsed_request_id"].startswith("req_") and seen["parsed_request_id"] != seen["request_id"], seen
    assert seen["error_request_id"] and seen["error_request_id"].startswith("req_"), seen
    # The same id names the request in the server's access log.
    assert f"request_id={seen['request_id']}" in server.log()
