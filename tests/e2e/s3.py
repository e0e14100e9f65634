"""A local S3-compatible server for the end-to-end tests: moto's standalone server
(``moto[server]`` from PyPI, installed into the test venv by tests/run).

One moto process serves the whole pytest session (see the ``moto_s3`` fixture in conftest.py);
every test that stores images in S3 gets a bucket of its own (``moto_s3.create_bucket()``), so
tests never see each other's objects. Buckets are created with a plain HTTP PUT; objects are read
back with boto3 (a dependency of moto), since moto refuses anonymous reads of private objects.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from helpers import LocalProcess, http

START_TIMEOUT = 30.0  # seconds for moto to answer after spawn
STOP_TIMEOUT = 5.0

# What imgproxy gets as AWS credentials for moto (any value works there).
ACCESS_KEY_ID = "e2e-access-key"
SECRET_ACCESS_KEY = "e2e-secret-access-key-0123456789"
REGION = "us-east-1"


def moto_command(port: int) -> list[str]:
    """``moto_server`` next to the running interpreter (the venv's), else ``python -m moto.server``."""
    script = Path(sys.executable).with_name("moto_server")
    if script.is_file():
        return [str(script), "-H", "127.0.0.1", "-p", str(port)]
    found = shutil.which("moto_server")
    if found:
        return [found, "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


@dataclass
class Bucket:
    """One bucket on the moto server, and the imgproxy environment that stores images in it."""

    s3: "MotoS3"
    name: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "IMGPROXY_S3_BUCKET": self.name,
            "IMGPROXY_S3_ENDPOINT": self.s3.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
            # never look for credentials or a region anywhere else
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }

    def client(self):  # noqa: ANN201 - a boto3 S3 client (boto3 comes with moto)
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3.url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10),
        )

    def get(self, key: str) -> tuple[int, bytes]:
        """(status, body) of the object ``key``, read with credentials (moto refuses anonymous
        reads of private objects)."""
        from botocore.exceptions import ClientError

        try:
            answer = self.client().get_object(Bucket=self.name, Key=key)
        except ClientError as error:
            return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)), b""
        return 200, answer["Body"].read()

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket (under ``prefix``), sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


class MotoS3(LocalProcess):
    """A moto server process on a free loopback port."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.log_path = workdir / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def object_url(self, bucket: str, key: str) -> str:
        return f"{self.url}/{bucket}/{urllib.parse.quote(key)}"

    def start(self) -> "MotoS3":
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                moto_command(self.port),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with status {self.proc.returncode}:\n{self.log()[-2000:]}")
            try:
                status, _, _ = http("GET", f"{self.url}/moto-api/", timeout=2)
                if status == 200:
                    return self
                last = f"status {status}"
            except OSError as error:
                last = str(error)
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto_server did not answer within {START_TIMEOUT}s ({last}):\n{self.log()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def create_bucket(self, prefix: str = "e2e") -> Bucket:
        """A new, empty bucket with a unique name (S3 rules: lower case, digits, dashes)."""
        name = f"{prefix}-{secrets.token_hex(6)}"
        status, _, body = http("PUT", f"{self.url}/{name}", body=b"", timeout=10)
        assert status == 200, f"creating bucket {name} on moto: {status} {body[:300]!r}"
        return Bucket(self, name)
