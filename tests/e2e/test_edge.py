"""The public edge (issue 12, findings 6, 8 and 10), against the real binary: every answer in
OpenAI's envelope (path parameters that are not UTF-8 included) and bounded (quoted values cut,
free strings limited, sizes strict); the URL API's path form never generating for routes,
probes or file names, and restricted to one host when configured; browser caching (ETag, 304,
Cache-Control by how an image was asked); nosniff everywhere and a CSP on SVG; CORS with
preflight; config mistakes refused at start naming the file, the key and valid choices."""

from __future__ import annotations

import base64
import json
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server
from fake_openai import FakeOpenAI
from helpers import assert_error_envelope, http
from imaging import PNG_SIGNATURE

MASTER_KEY = "sk-master-edge-" + "e" * 24
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
ALLOWED = "http://allowed.example"
REFUSED = "http://evil.example"
# Longest error body the bounded answers may have: the 1,024-character message cap plus the
# envelope's keys, with room to spare; a value echoed whole would be thousands of times this.
MAX_ERROR_BYTES = 4096


def generate(server: Server, headers: dict[str, str] | None = None, **body: Any) -> tuple[int, dict[str, str], bytes]:
    return http("POST", f"{server.url}/v1/images/generations", json_body=body, headers=headers)


def image_url(server: Server, **body: Any) -> str:
    status, _, raw = generate(server, response_format="url", **body)
    assert status == 200, raw[:500]
    return json.loads(raw)["data"][0]["url"]


def assert_png(status: int, headers: dict[str, str], body: bytes, what: str) -> None:
    assert status == 200, f"{what}: {status} {body[:300]!r}"
    assert headers.get("content-type") == "image/png", f"{what}: {headers}"
    assert body.startswith(PNG_SIGNATURE), f"{what}: not a PNG"


# ------------------------------------------------------------------------------------------
# finding 6: answers in the envelope, and bounded
# ------------------------------------------------------------------------------------------


def test_path_parameters_that_are_not_utf8_answer_in_the_envelope(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    for method, path, param, body in [
        ("GET", "/v1/tasks/%ff", "id", None),
        ("POST", "/v1/tasks/%ff/cancel", "id", None),
        ("GET", "/images/%ff", "key", None),
        ("GET", "/v1/files/%ff", "id", None),
        ("GET", "/v1/files/%ff/content", "id", None),
        ("DELETE", "/v1/files/%fe%ff", "id", None),
        ("GET", "/v1/models/%ff", "id", None),
        ("POST", "/v1/admin/keys/%ff/revoke", "id", None),
        ("POST", "/v1/admin/keys/%C3%28/credit", "id", {"amount": 5}),
    ]:
        status, headers, raw = http(method, f"{server.url}{path}", headers=auth, json_body=body)
        error = assert_error_envelope(status, headers, raw, expected_status=404, param=param, code="not_found")
        assert "UTF-8" in error["message"], f"{method} {path}: {error}"
    # Not a route either: the path form does not take bytes that are not text as a prompt.
    status, headers, raw = http("GET", f"{server.url}/%ff", headers=auth)
    assert_error_envelope(status, headers, raw, expected_status=404, code="not_found")


def test_echoed_values_are_cut_and_free_strings_are_limited(server: Server) -> None:
    huge = "q" * 1_000_000
    for body, status_code, param in [
        ({"prompt": "p", "quality": huge}, 400, "quality"),
        ({"prompt": "p", "size": huge}, 400, "size"),
        ({"prompt": "p", "response_format": huge}, 400, "response_format"),
        ({"prompt": "p", "n": huge}, 400, "n"),  # serde's own message quotes the value
        ({"prompt": "p", "model": huge}, 404, None),
    ]:
        status, headers, raw = generate(server, **body)
        field = next(k for k in body if k != "prompt")
        assert len(raw) < MAX_ERROR_BYTES, f"{field}: {len(raw)} bytes answered for a 1 MB value"
        error = assert_error_envelope(status, headers, raw, expected_status=status_code)
        if param:
            assert error["param"] == param, error
        assert "q" * 32 in error["message"] and "…" in error["message"], f"{field}: not quoted and cut: {error}"
    # An unknown parameter's name is echoed (in the message and `param`): cut too.
    status, headers, raw = generate(server, prompt="p", **{"k" * 100_000: 1})
    assert len(raw) < MAX_ERROR_BYTES, f"{len(raw)} bytes answered for a 100 kB parameter name"
    assert_error_envelope(status, headers, raw, expected_status=400)
    # The URL API's text values too.
    status, headers, raw = http("GET", f"{server.url}/api/generate?prompt=p&ext={'x' * 30_000}")
    assert len(raw) < MAX_ERROR_BYTES, f"{len(raw)} bytes"
    assert_error_envelope(status, headers, raw, expected_status=400, param="ext")

    # `user` has a documented limit (256), `safety_identifier` OpenAI's (64).
    status, headers, raw = generate(server, prompt="p", size="32x32", user="u" * 257)
    assert_error_envelope(status, headers, raw, expected_status=400, param="user")
    status, headers, raw = generate(server, prompt="p", size="32x32", safety_identifier="s" * 65)
    assert_error_envelope(status, headers, raw, expected_status=400, param="safety_identifier")
    status, _, raw = generate(server, prompt="p", size="32x32", user="u" * 256, safety_identifier="s" * 64)
    assert status == 200, raw[:500]


def test_sizes_are_parsed_strictly(server: Server) -> None:
    for size in ["+32x32", " 32x32", "32x32 ", "032x32", "32x+32", "32 x32", "-32x32", "32x32px"]:
        status, headers, raw = generate(server, prompt="p", size=size)
        assert_error_envelope(status, headers, raw, expected_status=400, param="size")
        status, headers, raw = http("GET", f"{server.url}/api/generate?" + urllib.parse.urlencode({"prompt": "p", "size": size}))
        assert_error_envelope(status, headers, raw, expected_status=400, param="size")
    for ratio in ["+16:9", "16:09", " 16:9"]:
        status, headers, raw = generate(server, prompt="p", aspect_ratio=ratio)
        assert_error_envelope(status, headers, raw, expected_status=400, param="aspect_ratio")
    status, _, raw = generate(server, prompt="p", size="32x32")
    assert status == 200, raw[:500]


# ------------------------------------------------------------------------------------------
# finding 8: the path form, caching, security headers, CORS
# ------------------------------------------------------------------------------------------

NEVER_PROMPTS = [
    "/health",
    "/HEALTH",
    "/livez",
    "/status",
    "/docs",
    "/swagger.json",
    "/favicon.ico",
    "/apple-touch-icon.png",
    "/robots.txt",
    "/sitemap.xml",
    "/.env",
    "/%2Eenv",
    "/.git",
    "/.well-known/security.txt",
    "/.well-known/openid-configuration",
    "/wp-login.php",
    "/index.html",
    "/wp-admin/install",
    "/v1",
    "/v2",
    "/api",
    "/images",
    "/admin",
    "/fox/.env",
    "/fox/config.yaml",
]


def test_the_path_form_never_generates_for_routes_probes_or_file_names(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI
) -> None:
    # A paid model as the URL API's default, behind a fake upstream that counts calls.
    server = imgproxy.start(
        {
            "OPENAI_API_KEY": OPENAI_TEST_KEY,
            "OPENAI_BASE_URL": f"{fake_openai.url}/v1",
            "IMGPROXY_URL_API_DEFAULT_MODEL": "gpt-image-2",
        }
    )
    for path in NEVER_PROMPTS:
        status, headers, raw = http("GET", f"{server.url}{path}")
        assert_error_envelope(status, headers, raw, expected_status=404, code="not_found")
    # The operator's routes answer as themselves, never as a prompt.
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        status, headers, _ = http("GET", f"{server.url}{path}")
        assert status == 200 and not headers["content-type"].startswith("image/"), (path, headers)
    assert fake_openai.image_requests() == [], [r.path for r in fake_openai.image_requests()]

    # The control: a prompt still generates, once, on the paid default.
    status, headers, raw = http("GET", f"{server.url}/a+red+fox")
    assert_png(status, headers, raw, "GET /a+red+fox")
    assert len(fake_openai.image_requests()) == 1


def test_the_path_form_can_be_restricted_to_one_host(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_URL_API_PATH_FORM_HOST": "api.example.test"})
    status, headers, raw = http("GET", f"{server.url}/a+fox?size=32x32", headers={"Host": "api.example.test"})
    assert_png(status, headers, raw, "path form on its host")
    status, headers, raw = http("GET", f"{server.url}/a+fox?size=32x32", headers={"Host": "API.example.test:8443"})
    assert_png(status, headers, raw, "its host, another port and case")
    for host in ["www.example.test", f"127.0.0.1:{server.port}", "api.example.test.evil"]:
        status, headers, raw = http("GET", f"{server.url}/a+fox?size=32x32", headers={"Host": host})
        assert_error_envelope(status, headers, raw, expected_status=404, code="not_found")
    # The query form is not restricted.
    status, headers, raw = http("GET", f"{server.url}/api/generate?prompt=a+fox&size=32x32")
    assert_png(status, headers, raw, "query form on another host")


def test_stored_images_are_cacheable_until_their_url_expires_and_revalidate(imgproxy: ImgproxyFactory) -> None:
    ttl = 600
    server = imgproxy.start({"IMGPROXY_URL_TTL_SECS": str(ttl)})
    url = image_url(server, prompt="a lighthouse", size="32x32", seed=4)
    status, headers, first = http("GET", url)
    assert_png(status, headers, first, "GET image")
    key = urllib.parse.urlsplit(url).path.rsplit("/", 1)[1]
    assert headers.get("etag") == f'"{key}"', headers
    directives = [d.strip() for d in headers.get("cache-control", "").split(",")]
    assert directives[0] == "public" and "immutable" in directives, headers.get("cache-control")
    max_age = int(next(d for d in directives if d.startswith("max-age=")).split("=")[1])
    # Bounded by the signature's expiry (a ttl from now, minus the seconds this test took).
    assert 0 < max_age <= ttl, max_age

    status, headers, body = http("GET", url, headers={"If-None-Match": f'"{key}"'})
    assert status == 304 and body == b"", (status, body[:100])
    assert headers.get("etag") == f'"{key}"'
    status, _, body = http("GET", url, headers={"If-None-Match": '"something-else"'})
    assert status == 200 and body == first
    # The signature is checked before any 304: a forged URL learns nothing.
    forged = url.replace("sig=", "sig=00")
    status, headers, raw = http("GET", forged, headers={"If-None-Match": f'"{key}"'})
    assert_error_envelope(status, headers, raw, expected_status=403, param="sig")


def test_url_api_answers_carry_an_etag_and_a_policy_by_how_they_were_asked(server: Server) -> None:
    plain = f"{server.url}/api/generate?prompt=a+kite&size=32x32&seed=2"
    status, headers, first = http("GET", plain)
    assert_png(status, headers, first, "URL API")
    etag = headers.get("etag")
    assert etag and etag.startswith('"') and etag.endswith('"'), headers
    assert headers.get("cache-control") == "private, no-cache", headers
    status, headers, body = http("GET", plain, headers={"If-None-Match": etag})
    assert status == 304 and body == b"", status
    assert headers.get("etag") == etag

    # A reroll is never cached, and never answered with a 304.
    status, headers, body = http("GET", f"{plain}&reroll=true", headers={"If-None-Match": etag})
    assert_png(status, headers, body, "reroll")
    assert headers.get("cache-control") == "no-store", headers

    # A conversion has its own tag.
    status, headers, body = http("GET", f"{plain}&ext=webp")
    assert status == 200 and headers.get("content-type") == "image/webp"
    assert headers.get("etag") not in (None, etag), headers


def test_nosniff_on_every_answer_and_a_csp_on_svg(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    server = imgproxy.start({"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": f"{fake_openai.url}/v1"})
    answers = {
        "healthz": http("GET", f"{server.url}/healthz"),
        "models": http("GET", f"{server.url}/v1/models"),
        "404": http("GET", f"{server.url}/v1/nope"),
        "405": http("PUT", f"{server.url}/v1/models"),
        "400": generate(server, prompt="p", size="1x"),
        "image": http("GET", image_url(server, prompt="p", size="32x32")),
        "url api": http("GET", f"{server.url}/api/generate?prompt=p&size=32x32"),
    }
    for what, (status, headers, _) in answers.items():
        assert headers.get("x-content-type-options") == "nosniff", f"{what} ({status}): {headers}"
        if what in ("image", "url api"):
            assert "content-security-policy" not in headers, f"{what}: a CSP only SVG needs"

    # An uploaded SVG, served back as file content.
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><script>alert(1)</script></svg>'
    boundary = "----edge" + uuid.uuid4().hex
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nvision\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.svg"\r\n'
        f"Content-Type: image/svg+xml\r\n\r\n"
    ).encode() + svg + f"\r\n--{boundary}--\r\n".encode()
    status, _, raw = http(
        "POST", f"{server.url}/v1/files", body=form, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert status in (200, 201), raw[:500]
    file_id = json.loads(raw)["id"]
    status, headers, body = http("GET", f"{server.url}/v1/files/{file_id}/content")
    assert status == 200 and body == svg, (status, body[:200])
    assert headers.get("content-type", "").startswith("image/svg+xml"), headers
    assert headers.get("content-security-policy") == SVG_CSP, headers
    assert headers.get("x-content-type-options") == "nosniff", headers

    # A generated SVG, served as a stored image.
    status, _, raw = generate(
        server,
        model="gpt-image-2.6-sunburst",
        prompt="a fox logo",
        output_format="svg",
        svg={"model": "gpt-5.6-terra"},
        response_format="url",
    )
    assert status == 200, raw[:500]
    status, headers, body = http("GET", json.loads(raw)["data"][0]["url"])
    assert status == 200 and b"<svg" in body[:400], (status, body[:200])
    assert headers.get("content-security-policy") == SVG_CSP, headers


def preflight(server: Server, origin: str, path: str = "/v1/images/generations") -> tuple[int, dict[str, str], bytes]:
    return http(
        "OPTIONS",
        f"{server.url}{path}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-lang",
        },
    )


def test_cors_is_per_origin_with_preflight(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_CORS_ALLOWED_ORIGINS": f"{ALLOWED}, http://other.example:8080"})
    status, headers, _ = preflight(server, ALLOWED)
    assert status == 200, status
    assert headers.get("access-control-allow-origin") == ALLOWED, headers
    assert "POST" in headers.get("access-control-allow-methods", ""), headers
    allowed_headers = headers.get("access-control-allow-headers", "").lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers, headers
    assert "origin" in headers.get("vary", "").lower(), headers

    status, headers, _ = preflight(server, REFUSED)
    assert "access-control-allow-origin" not in headers, f"a refused origin was allowed: {headers}"

    # Actual requests: an allowed origin reads the answer (errors too), a refused one cannot.
    url = image_url(server, prompt="p", size="32x32")
    for path_or_url in [url, f"{server.url}/api/generate?prompt=p&size=32x32", f"{server.url}/v1/nope"]:
        _, headers, _ = http("GET", path_or_url, headers={"Origin": ALLOWED})
        assert headers.get("access-control-allow-origin") == ALLOWED, f"{path_or_url}: {headers}"
        assert "etag" in headers.get("access-control-expose-headers", "").lower() or "nope" in path_or_url
        _, headers, _ = http("GET", path_or_url, headers={"Origin": REFUSED})
        assert "access-control-allow-origin" not in headers, f"{path_or_url}: {headers}"


def test_without_configured_origins_there_are_no_cors_headers(server: Server) -> None:
    status, headers, _ = preflight(server, ALLOWED)
    assert "access-control-allow-origin" not in headers, headers
    _, headers, _ = http("GET", f"{server.url}/v1/models", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in headers, headers


# ------------------------------------------------------------------------------------------
# finding 10: config mistakes refused at start
# ------------------------------------------------------------------------------------------


def refused_start(imgproxy: ImgproxyFactory, tmp_path: Path, toml: str, env: dict[str, str] | None = None) -> tuple[Path, str]:
    """Starts with ``toml`` as the config file; asserts the server exits non-zero without ever
    serving, and returns the file's path and the log."""
    config = tmp_path / f"imgproxy-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(toml)
    server = imgproxy.start(env, args=["--config", str(config)], wait=False)
    assert server.proc is not None
    try:
        code = server.proc.wait(timeout=30)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
    server.exit_code = server.proc.returncode  # expected non-zero: the factory must not re-check
    assert code != 0, f"started with a broken config:\n{toml}\n{server.log()}"
    return config, server.log()


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('default_model = "plaecholder"\n', ["`default_model`", "plaecholder", "`placeholder`"]),
        ('[url_api]\ndefault_model = "plaecholder"\n', ["`url_api.default_model`", "plaecholder", "`placeholder`"]),
        ('default_model = "gpt-image-2"\n', ["`default_model`", "gpt-image-2", "`openai`"]),
        ('[remap]\n"dall-e-3" = "gpt-image-9"\n', ["[remap]", "`gpt-image-9`", "is not a model"]),
        ('[routing]\n"flux-1.1-pro" = ["bfl", "replicat"]\n', ["[routing]", "`replicat`", "`replicate`"]),
        ('[cors]\nallowed_origins = ["https://app.example.com/"]\n', ["`cors.allowed_origins`", "https://app.example.com`"]),
        ('[url_api]\npath_form_host = "https://api.example.com/"\n', ["`url_api.path_form_host`"]),
    ],
)
def test_config_mistakes_are_refused_at_start_naming_file_key_and_choices(
    imgproxy: ImgproxyFactory, tmp_path: Path, toml: str, says: list[str]
) -> None:
    config, log = refused_start(imgproxy, tmp_path, toml)
    assert str(config) in log, f"the error does not name the file {config}:\n{log}"
    for text in says:
        assert text in log, f"the error does not say {text!r}:\n{log}"
    assert "internal error" not in log.lower(), log


def test_the_same_config_keys_start_when_they_are_right(imgproxy: ImgproxyFactory, tmp_path: Path) -> None:
    config = tmp_path / "good.toml"
    config.write_text(
        'default_model = "placeholder"\n[remap]\n"dall-e-3" = "placeholder"\n'
        '[routing]\n"flux-1.1-pro" = ["bfl", "replicate"]\n'
        '[url_api]\ndefault_model = "placeholder"\npath_form_host = "api.example.test"\n'
        f'[cors]\nallowed_origins = ["{ALLOWED}"]\n'
    )
    server = imgproxy.start(args=["--config", str(config)])
    status, _, raw = generate(server, model="dall-e-3", prompt="p", size="32x32")
    assert status == 200, raw[:500]
    data = json.loads(raw)["data"][0]
    assert base64.b64decode(data["b64_json"]).startswith(PNG_SIGNATURE)
