"""Hardening of the edge and of the work behind it (issue 12, findings 3-5): slow connections
cannot starve the server, generations and their memory are bounded and stop when their client
leaves, and an upstream that echoes the API key never gets it to a client or a log.

Everything targets loopback and is bounded in count and time: every wait has a generous
deadline, and what is measured is completion, not how fast it was."""

from __future__ import annotations

import concurrent.futures
import http.client as http_client
import json
import os
import re
import resource
import selectors
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from conftest import ImgproxyFactory, Server
from fake_openai import FakeOpenAI, error_reply
from fake_upstreams import FakeBfl
from helpers import assert_error_envelope, http

SLOW_CONNECTIONS = 1100
SERVER_FILE_LIMIT = 1024
MAX_CONNECTIONS = 512
HEADER_TIMEOUT_SECS = 2
GiB = 1024**3


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


@pytest.fixture
def file_limited(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Servers started in this test run with an open-file limit of 1,024, soft and hard (so
    that raising the soft limit cannot help them), while this process gets room for its own
    1,100 client sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SLOW_CONNECTIONS + 200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the test needs {wanted} open files and the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    real_popen = subprocess.Popen

    def limit_child() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_FILE_LIMIT, SERVER_FILE_LIMIT))

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("preexec_fn", limit_child)
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    try:
        yield
    finally:
        monkeypatch.undo()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc/<pid>/limits")


def peak_rss_bytes(pid: int) -> int:
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert match, "no VmHWM in /proc/<pid>/status"
    return int(match.group(1)) * 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(call: Callable[[], tuple[int, dict[str, str], bytes]]) -> tuple[float, int, bytes]:
    started = time.monotonic()
    status, _, body = call()
    return time.monotonic() - started, status, body


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {timeout}s")


class Drippers:
    """``count`` raw connections to ``port`` that send a request one byte a second and never
    finish it, each recording when the server closed it."""

    REQUEST = b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        self.sent: dict[int, int] = {}
        self.closed: set[int] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Drippers":
        for _ in range(self.count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", self.port))
            self.sockets.append(sock)
            self.sent[sock.fileno()] = 0
            self.selector.register(sock, selectors.EVENT_READ)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        for sock in self.sockets:
            sock.close()
        self.selector.close()

    def closed_count(self) -> int:
        with self.lock:
            return len(self.closed)

    def _close_seen(self, sock: socket.socket) -> None:
        with self.lock:
            if sock.fileno() not in self.closed:
                self.closed.add(sock.fileno())
                self.selector.unregister(sock)

    def _run(self) -> None:
        next_drip = time.monotonic()
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    if sock.recv(4096) == b"":
                        self._close_seen(sock)
                except BlockingIOError:
                    pass
                except OSError:
                    self._close_seen(sock)
            if time.monotonic() >= next_drip:
                next_drip += 1.0
                for sock in self.sockets:
                    fd = sock.fileno()
                    if fd in self.closed:
                        continue
                    at = self.sent[fd] % len(self.REQUEST)
                    try:
                        if sock.send(self.REQUEST[at : at + 1]) == 1:
                            self.sent[fd] += 1
                    except BlockingIOError:
                        pass  # still connecting, or the server is not reading: next second
                    except OSError:
                        self._close_seen(sock)


# ------------------------------------------------------------------------------------------
# Finding 3: slow connections, the file limit and the connection limit
# ------------------------------------------------------------------------------------------


def test_slow_connections_beyond_the_file_limit_do_not_starve_the_server(
    imgproxy: ImgproxyFactory, file_limited: None
) -> None:
    server = imgproxy.start(
        {
            "IMGPROXY_HEADER_READ_TIMEOUT_SECS": str(HEADER_TIMEOUT_SECS),
            "IMGPROXY_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        }
    )
    assert server.proc is not None
    assert open_files_limit(server.proc.pid) == (SERVER_FILE_LIMIT, SERVER_FILE_LIMIT)

    with Drippers(server.port, SLOW_CONNECTIONS) as drippers:
        # Give the drippers time to be accepted (and shed) and to send their first bytes.
        time.sleep(1.5)
        health = timed(lambda: http("GET", f"{server.url}/healthz", timeout=10))
        generation = timed(
            lambda: http(
                "POST",
                f"{server.url}/v1/images/generations",
                json_body={"model": "placeholder", "prompt": "still here", "size": "64x64"},
                timeout=10,
            )
        )
        assert health[1] == 200, health[2][:300]
        assert generation[1] == 200, generation[2][:300]
        assert json.loads(generation[2])["data"][0]["b64_json"]
        assert health[0] < 1.0, f"/healthz took {health[0]:.2f}s behind {SLOW_CONNECTIONS} slow connections"
        assert generation[0] < 1.0, f"a generation took {generation[0]:.2f}s behind {SLOW_CONNECTIONS} slow connections"

        # Every slow connection is closed: shed to make room, or at the header deadline.
        wait_for(
            lambda: drippers.closed_count() == SLOW_CONNECTIONS,
            60,
            f"the server closing all slow connections ({drippers.closed_count()} closed)",
        )

    log = server.log()
    assert "connection limit reached" in log, "shedding connections is logged"
    shed = [int(n) for n in re.findall(r"\bshed=(\d+)", log)]
    assert shed and max(shed) > 0, "the log carries the counter of shed connections"
    # And it still serves, then stops cleanly (the fixture checks the exit).
    assert http("GET", f"{server.url}/healthz", timeout=10)[0] == 200


def test_a_connection_that_sends_no_complete_request_is_closed_after_the_header_timeout(
    imgproxy: ImgproxyFactory,
) -> None:
    server = imgproxy.start({"IMGPROXY_HEADER_READ_TIMEOUT_SECS": str(HEADER_TIMEOUT_SECS)})
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        assert sock.recv(100) == b"", "closed without an answer"
        elapsed = time.monotonic() - started
    # Generous both ways: not before the deadline, and long before the test's own timeout.
    assert HEADER_TIMEOUT_SECS - 0.5 <= elapsed < 20, elapsed


def test_a_request_body_that_does_not_arrive_in_time_is_refused_and_its_connection_closed(
    imgproxy: ImgproxyFactory,
) -> None:
    server = imgproxy.start({"IMGPROXY_BODY_READ_TIMEOUT_SECS": "2"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert_error_envelope(status, headers, body, expected_status=400)


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_IDLE_TIMEOUT_SECS": "2"})
    conn = http_client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/healthz")
    response = conn.getresponse()
    assert response.status == 200 and response.read()
    assert conn.sock is not None
    assert conn.sock.recv(100) == b"", "the idle connection is closed by the server"
    conn.close()


@pytest.mark.parametrize(
    "variable",
    ["IMGPROXY_HEADER_READ_TIMEOUT_SECS", "IMGPROXY_MAX_CONNECTIONS", "IMGPROXY_PLACEHOLDER_MAX_GENERATIONS"],
)
def test_a_zero_limit_is_refused_at_start(imgproxy: ImgproxyFactory, variable: str) -> None:
    server = imgproxy.start({variable: "0"}, wait=False)
    assert server.proc is not None
    assert server.proc.wait(timeout=30) != 0
    assert variable in server.log()
    server.exit_code = 0  # it never served: nothing for the fixture to stop


# ------------------------------------------------------------------------------------------
# Finding 4: bounded work
# ------------------------------------------------------------------------------------------

BIG = {"model": "placeholder", "prompt": "a very large otter", "n": 10, "size": "4096x4096"}


def post_generation(base_url: str, body: dict[str, Any], timeout: float) -> tuple[int, dict[str, str], bytes]:
    conn = http_client.HTTPConnection("127.0.0.1", int(base_url.rsplit(":", 1)[1]), timeout=timeout)
    try:
        conn.request("POST", "/v1/images/generations", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_fifty_huge_requests_stay_bounded_in_memory_and_excess_is_refused_with_retry_after(
    imgproxy: ImgproxyFactory,
) -> None:
    server = imgproxy.start(
        {
            "IMGPROXY_PLACEHOLDER_MAX_GENERATIONS": "2",
            "IMGPROXY_GENERATION_QUEUE": "2",
            "IMGPROXY_GENERATION_QUEUE_TIMEOUT_SECS": "600",
        }
    )
    assert server.proc is not None
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        # Distinct prompts: identical requests would share one generation through the cache.
        futures = [
            pool.submit(post_generation, server.url, {**BIG, "prompt": f"a very large otter #{i}"}, 600)
            for i in range(50)
        ]
        results = [f.result(timeout=900) for f in futures]
    statuses = sorted(status for status, _, _ in results)
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(ok) + len(refused) == 50, statuses
    # Two run and two wait: those four are answered, whatever the timing; the rest are shed.
    assert len(ok) >= 4, statuses
    assert refused, statuses
    for status, headers, body in refused:
        assert int(headers["retry-after"]) >= 1
        assert_error_envelope(status, headers, body, expected_status=503, code="overloaded")
    for _, _, body in ok:
        assert len(json.loads(body)["data"]) == 10
    peak = peak_rss_bytes(server.proc.pid)
    assert peak < 1.5 * GiB, f"peak RSS {peak / GiB:.2f} GiB"


def test_a_dropped_request_stops_rendering(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        body = json.dumps(BIG).encode()
        sock.sendall(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(1.0)  # let it start drawing
    # Event-driven: the renderer says when it gave up; the bound is generous.
    wait_for(lambda: "placeholder rendering cancelled" in server.log(), 30, "the render stopping")
    # Nothing renders after it: over two seconds the server burns a fraction of the four
    # CPU-seconds that two workers drawing and encoding on would.
    assert server.proc is not None
    before = cpu_seconds(server.proc.pid)
    time.sleep(2.0)
    spent = cpu_seconds(server.proc.pid) - before
    assert spent < 1.0, f"the server used {spent:.2f} CPU-seconds after the cancellation"
    assert http("GET", f"{server.url}/healthz", timeout=10)[0] == 200


# ------------------------------------------------------------------------------------------
# Finding 5: a key echoed by an upstream, at every offset across the cut
# ------------------------------------------------------------------------------------------

ECHO_KEY = "sk-echo-0123456789abcdefghijklmnopqrstuvwxyzABCD"
CUT = 300  # imgproxy_core::upstream::MAX_MESSAGE_CHARS
OFFSETS = range(CUT - len(ECHO_KEY) - 2, CUT + 3)


def key_pieces(key: str, length: int = 12) -> list[str]:
    return [key[i : i + length] for i in range(len(key) - length + 1)]


def assert_no_key(text: str, where: str) -> None:
    for piece in key_pieces(ECHO_KEY):
        assert piece not in text, f"`{piece}` of the key in {where}: {text[:1000]}"


def test_a_key_echoed_by_openai_at_every_offset_never_reaches_a_client_or_the_log(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI
) -> None:
    server = imgproxy.start({"OPENAI_API_KEY": ECHO_KEY, "OPENAI_BASE_URL": f"{fake_openai.url}/v1"})
    for status in (400, 500):
        for offset in OFFSETS:
            fake_openai.always(error_reply(status, "x" * offset + ECHO_KEY + " was used"))
            code, _, body = http(
                "POST",
                f"{server.url}/v1/images/generations",
                json_body={"model": "gpt-image-1.5", "prompt": f"echo {offset}", "size": "1024x1024"},
            )
            assert code in (400, 502), body[:300]
            assert_no_key(body.decode(errors="replace"), f"the answer at offset {offset}")
    assert_no_key(server.log(), "the server log")


@pytest.fixture
def echoing_bfl() -> Iterator[FakeBfl]:
    fake = FakeBfl(ECHO_KEY, pending_polls=0, task_error="")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def test_a_key_echoed_in_a_failed_task_at_every_offset_never_reaches_a_client_or_the_log(
    imgproxy: ImgproxyFactory, echoing_bfl: FakeBfl
) -> None:
    # BFL reports a failed task in a 200 poll answer, which adapters read themselves.
    server = imgproxy.start({"BFL_API_KEY": ECHO_KEY, "BFL_BASE_URL": echoing_bfl.api_url})
    for offset in OFFSETS:
        echoing_bfl.task_error = "x" * offset + ECHO_KEY + " was used"
        code, _, body = http(
            "POST",
            f"{server.url}/v1/images/generations",
            json_body={"model": "flux-1.1-pro", "prompt": f"echo {offset}", "size": "1024x1024"},
        )
        assert code >= 400, body[:300]
        assert_no_key(body.decode(errors="replace"), f"the answer at offset {offset}")
    assert_no_key(server.log(), "the server log")
