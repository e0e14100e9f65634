"""Fixtures that run the real imgproxy binary.

Every server runs on its own free loopback port, with its own data directory, in a clean
environment (no inherited OPENAI_* / IMGPROXY_* / OTEL_* / proxy variables), its stdout and stderr in a
log file that is attached to the report of a failing test. Servers are stopped with SIGTERM and
must exit with status 0 within a few seconds: every test therefore also checks graceful shutdown.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_openai import FakeOpenAI  # noqa: E402
from helpers import LocalProcess, free_port, http  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0  # seconds for /healthz to answer after spawn
STOP_TIMEOUT = 5.0  # seconds a SIGTERMed server may take to exit

_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}

# The tests themselves talk to loopback servers only: never through a proxy.
for _name in list(os.environ):
    if _name.lower() in _PROXY_VARS:
        del os.environ[_name]
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
# ...and the SDK in the tests must not pick up a developer's OpenAI settings.
for _name in list(os.environ):
    if _name.startswith("OPENAI_"):
        del os.environ[_name]


def imgproxy_bin() -> Path:
    configured = os.environ.get("IMGPROXY_BIN")
    path = (Path(configured) if configured else REPO / "target" / "debug" / "imgproxy").resolve()
    if not path.is_file():
        pytest.exit(f"imgproxy binary not found at {path}: build it (tests/run does) or set IMGPROXY_BIN", 2)
    return path


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without OPENAI_*, IMGPROXY_*, OTEL_* or proxy variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "IMGPROXY_", "OTEL_")) and k.lower() not in _PROXY_VARS
    }
    env.setdefault("RUST_BACKTRACE", "1")
    env.setdefault("RUST_LOG", "info")
    env.setdefault("NO_COLOR", "1")
    env.update(extra or {})
    return env


@dataclass
class Server(LocalProcess):
    """One running imgproxy process."""

    port: int
    data_dir: Path
    env: dict[str, str]
    args: list[str]
    log_path: Path
    label: str
    proc: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait; returns the exit status. Fails the test if the server does not
        exit within ``timeout`` (it is then killed) or exits with a non-zero status."""
        assert self.proc is not None, "server was never started"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"{self.label}: imgproxy did not exit within {timeout}s of SIGTERM")
        self.exit_code = self.proc.returncode
        assert self.exit_code == 0, f"{self.label}: imgproxy exited with status {self.exit_code} after SIGTERM"
        return self.exit_code


class ImgproxyFactory:
    """Starts imgproxy servers for one test and stops them all at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.servers: list[Server] = []

    def start(
        self,
        env: dict[str, str] | None = None,
        *,
        data_dir: Path | None = None,
        port: int | None = None,
        args: list[str] | None = None,
        cli: bool = True,
        wait: bool = True,
    ) -> Server:
        """Starts ``imgproxy serve`` with ``env`` added to a clean environment.

        ``cli=True`` passes ``--listen`` and ``--data-dir``; ``cli=False`` passes them as
        IMGPROXY_LISTEN / IMGPROXY_DATA_DIR instead. ``args`` are appended to the command line.
        """
        index = len(self.servers)
        port = port or free_port()
        data_dir = data_dir or (self.tmp_path / f"data{index}")
        full_env = clean_env(env)
        command = [str(imgproxy_bin()), "serve"]
        if cli:
            command += ["--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)]
        else:
            full_env["IMGPROXY_LISTEN"] = f"127.0.0.1:{port}"
            full_env["IMGPROXY_DATA_DIR"] = str(data_dir)
        command += args or []
        server = Server(
            port=port,
            data_dir=data_dir,
            env=dict(env or {}),
            args=list(args or []),
            log_path=self.tmp_path / f"imgproxy{index}.log",
            label=f"server #{index} on port {port}",
        )
        self.servers.append(server)
        with open(server.log_path, "wb") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            server.proc = subprocess.Popen(
                command,
                env=full_env,
                cwd=self.tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_healthy(server)
        return server

    def wait_healthy(self, server: Server) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if not server.running():
                pytest.fail(f"{server.label}: imgproxy exited with status {server.proc.returncode} while starting")
            try:
                status, _, _ = http("GET", f"{server.url}/healthz", timeout=2)
                if status == 200:
                    return
                last = f"status {status}"
            except OSError as error:
                last = str(error)
            time.sleep(0.05)
        pytest.fail(f"{server.label}: /healthz did not answer 200 within {START_TIMEOUT}s ({last})")

    def restart(self, server: Server) -> Server:
        """Stops ``server`` (SIGTERM, clean exit) and starts a new one on the same port, data
        directory and environment."""
        server.stop()
        return self.start(server.env, data_dir=server.data_dir, port=server.port, args=server.args)

    def stop_all(self) -> None:
        errors = []
        for server in self.servers:
            if server.proc is not None and server.exit_code is None:
                try:
                    server.stop()
                except BaseException as error:  # noqa: BLE001 - report every server
                    errors.append(str(error))
        if errors:
            pytest.fail("; ".join(errors))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    factory: ImgproxyFactory | None = getattr(item, "_imgproxy_factory", None)
    if factory is None or not report.failed:
        return
    for server in factory.servers:
        report.sections.append((f"imgproxy log: {server.label}", server.log()))


@pytest.fixture
def imgproxy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ImgproxyFactory]:
    """A factory: ``imgproxy.start(env)``, ``imgproxy.restart(server)``."""
    factory = ImgproxyFactory(tmp_path)
    request.node._imgproxy_factory = factory
    yield factory
    factory.stop_all()


@pytest.fixture
def server(imgproxy: ImgproxyFactory) -> Server:
    """An unconfigured server: placeholder model only, no master key."""
    return imgproxy.start()


@pytest.fixture
def base_url(server: Server) -> str:
    return server.url


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


OPENAI_TEST_KEY = "sk-test-e2e"


@pytest.fixture
def openai_server(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> Server:
    """A server with the OpenAI provider enabled, pointed at the fake upstream."""
    return imgproxy.start({"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": f"{fake_openai.url}/v1"})


# ------------------------------------------------------------------------------------------
# Postgres: a fresh database per test that asks for one
# ------------------------------------------------------------------------------------------

POSTGRES_ADMIN_URL = os.environ.get("IMGPROXY_E2E_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")


def psql(url: str, sql: str, variables: dict[str, str] | None = None) -> str:
    """Runs ``sql`` (read from stdin, so ``:'name'`` variables are quoted by psql) and returns
    its unaligned, tab-separated output."""
    if shutil.which("psql") is None:
        pytest.fail("psql is not installed: the Postgres tests need it (and a server, see the module docstring)")
    command = ["psql", url, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
    for name, value in (variables or {}).items():
        command += ["-v", f"{name}={value}"]
    done = subprocess.run(command, input=sql, capture_output=True, text=True, timeout=30, env=clean_env())
    if done.returncode != 0:
        pytest.fail(f"psql failed ({done.returncode}): {done.stderr.strip()}\n{sql}")
    return done.stdout


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty Postgres database for this test; dropped at its end."""
    name = f"imgproxy_e2e_{secrets.token_hex(6)}"
    psql(f"{POSTGRES_ADMIN_URL}/postgres", f"CREATE DATABASE {name};\n")
    try:
        yield f"{POSTGRES_ADMIN_URL}/{name}"
    finally:
        psql(f"{POSTGRES_ADMIN_URL}/postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE);\n")


# ------------------------------------------------------------------------------------------
# S3: one local moto server per session (tests/e2e/s3.py), a fresh bucket per test
# ------------------------------------------------------------------------------------------

from s3 import Bucket, MotoS3  # noqa: E402


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A moto S3 server on a free loopback port for the whole session; stopped at its end.
    A developer's own AWS settings (profile, session token, ...) are removed from the test
    process's environment first, so that servers started with a bucket's env see only the
    credentials the tests give them."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            del os.environ[name]
    s3 = MotoS3(tmp_path_factory.mktemp("moto"), free_port()).start()
    try:
        yield s3
    finally:
        s3.stop()


@pytest.fixture
def s3_bucket(moto_s3: MotoS3) -> Bucket:
    """A new, empty bucket on the session's moto server; ``.env`` points imgproxy at it."""
    return moto_s3.create_bucket()
