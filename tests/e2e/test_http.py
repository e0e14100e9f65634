"""imgproxy's HTTP surface at the wire level: error statuses and the exact OpenAI error envelope,
body limits, routing, /healthz and the master key."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse

import openai
import pytest
from conftest import ImgproxyFactory, Server
from helpers import assert_error_envelope, client, http, raw_post

MiB = 1024 * 1024
DEFAULT_BODY_LIMIT = 25 * MiB
MASTER_KEY = "mk-e2e-0123456789"


def generations(base_url: str) -> str:
    return f"{base_url}/v1/images/generations"


def test_healthz_answers_200(base_url: str) -> None:
    status, _, body = http("GET", f"{base_url}/healthz")
    assert status == 200, body[:300]


def test_a_valid_request_over_raw_http_answers_openai_images_response(base_url: str) -> None:
    status, headers, body = http(
        "POST", generations(base_url), json_body={"model": "placeholder", "prompt": "a kettle", "size": "32x32"}
    )
    assert status == 200, body[:500]
    assert headers.get("content-type", "").startswith("application/json")
    response = json.loads(body)
    assert isinstance(response["created"], int)
    assert len(response["data"]) == 1 and response["data"][0]["b64_json"]


def test_malformed_json_is_400_envelope(base_url: str) -> None:
    status, headers, body = http(
        "POST",
        generations(base_url),
        body=b'{"model": "placeholder", "prompt": ',
        headers={"Content-Type": "application/json"},
    )
    assert_error_envelope(status, headers, body, expected_status=400, type="invalid_request_error")


def test_json_that_is_not_an_object_is_400_envelope(base_url: str) -> None:
    status, headers, body = http(
        "POST", generations(base_url), body=b"[1, 2, 3]", headers={"Content-Type": "application/json"}
    )
    assert_error_envelope(status, headers, body, expected_status=400)


def test_wrongly_typed_field_is_400_envelope(base_url: str) -> None:
    status, headers, body = http(
        "POST", generations(base_url), json_body={"model": "placeholder", "prompt": "p", "n": "two"}
    )
    assert_error_envelope(status, headers, body, expected_status=400)


def test_missing_prompt_is_400_naming_prompt(base_url: str) -> None:
    status, headers, body = http("POST", generations(base_url), json_body={"model": "placeholder"})
    assert_error_envelope(status, headers, body, expected_status=400, param="prompt")


def test_invalid_size_is_400_naming_size(base_url: str) -> None:
    status, headers, body = http(
        "POST", generations(base_url), json_body={"model": "placeholder", "prompt": "p", "size": "13x13"}
    )
    assert_error_envelope(status, headers, body, expected_status=400, param="size", type="invalid_request_error")


def test_unknown_model_is_404_model_not_found(base_url: str) -> None:
    status, headers, body = http(
        "POST", generations(base_url), json_body={"model": "no-such-model", "prompt": "p"}
    )
    assert_error_envelope(status, headers, body, expected_status=404, code="model_not_found")


def test_n_above_max_is_400_naming_n(base_url: str) -> None:
    status, headers, body = http(
        "POST", generations(base_url), json_body={"model": "placeholder", "prompt": "p", "n": 11}
    )
    assert_error_envelope(status, headers, body, expected_status=400, param="n")


def test_text_plain_content_type_is_415_envelope(base_url: str) -> None:
    status, headers, body = http(
        "POST",
        generations(base_url),
        body=json.dumps({"model": "placeholder", "prompt": "p"}).encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert_error_envelope(status, headers, body, expected_status=415)


def test_body_over_the_default_25_mib_limit_is_413_envelope(base_url: str) -> None:
    prefix, suffix = b'{"model": "placeholder", "prompt": "', b'"}'
    body = prefix + b"a" * (DEFAULT_BODY_LIMIT + 1 - len(prefix) - len(suffix)) + suffix
    assert len(body) == DEFAULT_BODY_LIMIT + 1
    status, headers, answer = raw_post(generations(base_url), body, {"Content-Type": "application/json"})
    assert_error_envelope(status, headers, answer, expected_status=413)


def test_body_just_under_the_default_limit_is_read_not_413(base_url: str) -> None:
    prefix, suffix = b'{"model": "placeholder", "prompt": "', b'"}'
    body = prefix + b"a" * (DEFAULT_BODY_LIMIT - 4096 - len(prefix) - len(suffix)) + suffix
    status, headers, answer = raw_post(generations(base_url), body, {"Content-Type": "application/json"})
    # the body is read and validated: the prompt is far too long for the model
    assert_error_envelope(status, headers, answer, expected_status=400, param="prompt")


@pytest.mark.parametrize(
    ("method", "path"),
    # `GET /{prompt}` and `GET /{prompt}/{model}` are the URL API's path form, so an unknown
    # route is anything else: a reserved first segment, three segments, or another method.
    [
        ("GET", "/v1/nope"),
        ("GET", "/api/nope"),
        ("GET", "/a/b/c"),
        ("POST", "/nope"),
        ("POST", "/v1/images/unknown"),
        ("GET", "/v1/images/generations/x"),
    ],
)
def test_unknown_route_is_404_envelope(base_url: str, method: str, path: str) -> None:
    status, headers, body = http(
        method, f"{base_url}{path}", json_body={} if method == "POST" else None
    )
    assert_error_envelope(status, headers, body, expected_status=404)


def test_wrong_method_on_a_known_route_is_an_error_envelope(base_url: str) -> None:
    status, headers, body = http("GET", generations(base_url))
    assert status in (404, 405), f"GET on the generations route answered {status}"
    assert_error_envelope(status, headers, body, expected_status=status)


def _stored_image_url(base_url: str, api_key: str = "sk-anything") -> str:
    response = client(base_url, api_key=api_key).images.generate(
        model="placeholder", prompt="a teapot", size="32x32", response_format="url"
    )
    assert response.data is not None and response.data[0].url
    return response.data[0].url


def _sign(secret: str, path: str, params: dict[str, str]) -> str:
    """The signature imgproxy makes, computed independently: HMAC-SHA256 of the path, a
    newline and the sorted, form-encoded parameters."""
    canonical = urllib.parse.urlencode(sorted(params.items()))
    return hmac.new(secret.encode(), f"{path}\n{canonical}".encode(), hashlib.sha256).hexdigest()


def test_image_urls_are_signed_and_expire(server: Server) -> None:
    url = _stored_image_url(server.url)
    status, headers, body = http("GET", url)
    assert status == 200 and body.startswith(b"\x89PNG"), (status, body[:100])
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert set(query) == {"exp", "sig"}, url
    assert int(query["exp"]) > time.time() + 6 * 24 * 3600, "image URLs last a week by default"
    secret = (server.data_dir / "url-secret").read_text().strip()
    assert query["sig"] == _sign(secret, parts.path, {"exp": query["exp"]}), "the signature scheme changed"
    base = f"{server.url}{parts.path}"
    expired = str(int(time.time()) - 1)
    for refused in (
        base,  # unsigned
        f"{base}?exp={query['exp']}",  # no signature
        f"{base}?exp={int(query['exp']) + 1}&sig={query['sig']}",  # altered expiry
        f"{base}?exp={expired}&sig={_sign(secret, parts.path, {'exp': expired})}",  # expired
        f"{base}?exp={query['exp']}&sig={_sign('x' * 64, parts.path, {'exp': query['exp']})}",  # other secret
    ):
        status, headers, body = http("GET", refused)
        assert_error_envelope(status, headers, body, expected_status=403, code="invalid_signature")
    # A correctly signed URL of an image that does not exist is a 404.
    missing = f"/images/{'0' * 64}.png"
    status, headers, body = http(
        "GET", f"{server.url}{missing}?exp={query['exp']}&sig={_sign(secret, missing, {'exp': query['exp']})}"
    )
    assert_error_envelope(status, headers, body, expected_status=404)


def test_image_url_path_traversal_is_refused(base_url: str) -> None:
    url = _stored_image_url(base_url)
    prefix = url.rpartition("/")[0]
    for name in ("..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd", "..%2F..%2Fimgproxy0.log", "%2E%2E%2F%2E%2E%2Fimgproxy0.log"):
        status, _, body = http("GET", f"{prefix}/{name}")
        assert status in (400, 403, 404), f"GET {prefix}/{name} answered {status}"
        assert b"root:" not in body


# ------------------------------------------------------------------------------------------
# master key
# ------------------------------------------------------------------------------------------


@pytest.fixture
def keyed_server(imgproxy: ImgproxyFactory) -> Server:
    return imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/models"), ("GET", "/v1/models/placeholder"), ("POST", "/v1/images/generations")]
)
def test_master_key_missing_is_401_envelope(keyed_server: Server, method: str, path: str) -> None:
    body = {"model": "placeholder", "prompt": "p", "size": "16x16"} if method == "POST" else None
    status, headers, answer = http(method, f"{keyed_server.url}{path}", json_body=body)
    assert_error_envelope(status, headers, answer, expected_status=401)


@pytest.mark.parametrize("authorization", [f"Bearer {MASTER_KEY}x", "Bearer wrong", MASTER_KEY, f"Basic {MASTER_KEY}"])
def test_master_key_wrong_is_401_envelope(keyed_server: Server, authorization: str) -> None:
    status, headers, body = http("GET", f"{keyed_server.url}/v1/models", headers={"Authorization": authorization})
    error = assert_error_envelope(status, headers, body, expected_status=401)
    assert MASTER_KEY not in error["message"]


def test_master_key_checked_before_the_body_is_validated(keyed_server: Server) -> None:
    status, headers, body = http(
        "POST",
        generations(keyed_server.url),
        body=b"{not json",
        headers={"Content-Type": "application/json", "Authorization": "Bearer wrong"},
    )
    assert_error_envelope(status, headers, body, expected_status=401)


def test_master_key_right_is_200(keyed_server: Server) -> None:
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    status, _, body = http("GET", f"{keyed_server.url}/v1/models", headers=auth)
    assert status == 200, body[:300]
    assert "placeholder" in [m["id"] for m in json.loads(body)["data"]]
    status, _, body = http(
        "POST",
        generations(keyed_server.url),
        json_body={"model": "placeholder", "prompt": "p", "size": "16x16"},
        headers=auth,
    )
    assert status == 200, body[:300]


def test_master_key_with_the_sdk(keyed_server: Server) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(keyed_server.url, api_key="sk-wrong").models.list()
    assert caught.value.status_code == 401
    ids = [m.id for m in client(keyed_server.url, api_key=MASTER_KEY).models.list()]
    assert "placeholder" in ids


def test_healthz_needs_no_master_key(keyed_server: Server) -> None:
    status, _, body = http("GET", f"{keyed_server.url}/healthz")
    assert status == 200, body[:300]
