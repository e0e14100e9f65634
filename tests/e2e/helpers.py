"""Helpers shared by the end-to-end tests: raw HTTP without proxies, the OpenAI error envelope
check, SDK clients, free ports and multipart bodies."""

from __future__ import annotations

import http.client as http_client
import json
import secrets
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import openai

_no_proxy_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request without raising on 4xx/5xx: (status, lower-cased headers, body)."""
    headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with _no_proxy_opener.open(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()



def raw_post(url: str, body: bytes, headers: dict[str, str], timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """POSTs ``body`` with http.client, tolerating a server that answers and closes the
    connection before it has read the whole body (as it may for a 413)."""
    parts = urllib.parse.urlsplit(url)
    conn = http_client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.putrequest("POST", parts.path or "/")
        conn.putheader("Content-Length", str(len(body)))
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        try:
            view = memoryview(body)
            for start in range(0, len(body), 1 << 20):
                conn.send(view[start : start + (1 << 20)])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer is still there to read
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


ERROR_KEYS = {"message", "type", "param", "code"}


def assert_error_envelope(
    status: int,
    headers: dict[str, str],
    body: bytes,
    *,
    expected_status: int,
    param: Any = ...,
    code: Any = ...,
    type: Any = ...,  # noqa: A002 - OpenAI's field name
) -> dict[str, Any]:
    """Checks an error response: the status, a JSON body of exactly
    ``{"error": {"message", "type", "param", "code"}}`` with a non-empty message, and the
    given param / code / type where passed. Returns the inner error object."""
    text = body.decode(errors="replace")
    assert status == expected_status, f"expected status {expected_status}, got {status}: {text[:500]}"
    content_type = headers.get("content-type", "")
    assert content_type.startswith("application/json"), f"error content-type is {content_type!r}: {text[:500]}"
    try:
        envelope = json.loads(body)
    except ValueError:
        raise AssertionError(f"error body is not JSON: {text[:500]!r}") from None
    assert isinstance(envelope, dict) and set(envelope) == {"error"}, f"not an OpenAI error envelope: {envelope}"
    error = envelope["error"]
    assert isinstance(error, dict) and set(error) == ERROR_KEYS, (
        f"error object must have exactly the keys {sorted(ERROR_KEYS)}: {error}"
    )
    assert isinstance(error["message"], str) and error["message"].strip(), f"empty error message: {error}"
    assert isinstance(error["type"], str) and error["type"], f"error type must be a string: {error}"
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    if param is not ...:
        assert error["param"] == param, f"expected param {param!r}: {error}"
    if code is not ...:
        assert error["code"] == code, f"expected code {code!r}: {error}"
    if type is not ...:
        assert error["type"] == type, f"expected type {type!r}: {error}"
    return error


def client(base_url: str, api_key: str = "sk-anything", **kwargs: Any) -> openai.OpenAI:
    """The official SDK pointed at an imgproxy server; no retries, so every call is one
    request."""
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 60.0)
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, **kwargs)


class LocalProcess:
    """A process of the tests' own on a loopback ``port``, writing to ``log_path``."""

    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FormValue = str | tuple[str, bytes, str]


def multipart(fields: list[tuple[str, FormValue]]) -> tuple[bytes, str]:
    """A multipart/form-data body as the SDKs build it: text parts, and file parts given as
    (filename, bytes, content type). Returns (body, Content-Type header)."""
    boundary = f"----e2e-{secrets.token_hex(8)}"
    out = bytearray()
    for name, value in fields:
        out += f"--{boundary}\r\n".encode()
        if isinstance(value, tuple):
            filename, data, content_type = value
            out += f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode()
            out += f"Content-Type: {content_type}\r\n\r\n".encode()
            out += data
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            out += value.encode()
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"
