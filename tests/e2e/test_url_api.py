"""The URL API (seed 000: ``GET /api/generate`` and the path forms ``/{prompt}[/{model}]``), its
cache and names, on both image stores (the data dir and S3 on a local moto server), signed URLs
(the API and the CLI), public mode, and the signed image URLs of ``response_format: "url"``.

Everything is raw HTTP: the URL API answers with image bytes and headers (X-Cache-Status,
X-Cache-Store, X-S3-Key, X-Model, Content-Disposition, X-Credits-Remaining), not with JSON.
Upstream calls are counted on the fakes: a HIT must never reach the upstream.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import blake3
import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server, clean_env, imgproxy_bin
from fake_openai import FakeOpenAI, Reply, solid_png
from fake_upstreams import FakeBfl, FakeFiles, FakeReplicate, Response
from helpers import assert_error_envelope, http
from imaging import PNG_SIGNATURE, jpeg_size, parse_png, parse_webp
from s3 import Bucket

MASTER_KEY = "mk-url-api-e2e-0123456789"
REPLICATE_TOKEN = "r8_url_api_e2e_0123456789"
BFL_KEY = "bfl-url-api-e2e-0123456789"
MISS = "MISS-GENERATED"
HIT = "HIT"
S3_IMAGE_KEY = re.compile(r"^images/([0-9a-f]{2})/([0-9a-f]{64})\.(png|jpg|jpeg|webp)$")

# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def api(server: Server, **params: Any) -> str:
    """``/api/generate`` with ``params`` (lists repeat the parameter)."""
    return f"{server.url}/api/generate?{urllib.parse.urlencode(params, doseq=True)}"


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    return http("GET", url, headers=headers, timeout=timeout)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def openai_env(fake: FakeOpenAI) -> dict[str, str]:
    return {"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": f"{fake.url}/v1"}


def create_key(server: Server, credits: int = 10_000, **fields: Any) -> tuple[dict[str, Any], str]:
    """Issues a key with the master key: (key object, secret)."""
    body = {"name": f"url-api-{secrets.token_hex(3)}", "credits": credits, **fields}
    status, _, raw = http("POST", f"{server.url}/v1/admin/keys", json_body=body, headers=bearer(MASTER_KEY))
    assert status == 201, f"POST /v1/admin/keys {body} -> {status}: {raw[:500]!r}"
    created = json.loads(raw)
    assert created["secret"].startswith("ipk_"), created
    return created["key"], created["secret"]


def admin_balance(server: Server, key_id: str) -> int:
    """A key's balance as the admin API lists it (not counted against the key's own limits)."""
    status, _, raw = http("GET", f"{server.url}/v1/admin/keys", headers=bearer(MASTER_KEY))
    assert status == 200, raw[:500]
    listed = json.loads(raw)
    keys = listed["data"] if isinstance(listed, dict) else listed
    (key,) = [k for k in keys if k["id"] == key_id]
    return int(key["balance"])


MIME = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


def image_size(body: bytes, fmt: str) -> tuple[int, int]:
    """(width, height) of a valid image of format ``fmt``; AssertionError if it is not one."""
    if fmt == "png":
        png = parse_png(body)
        return png.width, png.height
    if fmt == "jpg":
        return jpeg_size(body)
    webp = parse_webp(body)
    return webp.width, webp.height


def assert_image(
    answer: tuple[int, dict[str, str], bytes], *, cache: str | None, fmt: str = "png", what: str = ""
) -> bytes:
    """A 200 with a valid image of ``fmt``, its Content-Type, and X-Cache-Status ``cache``
    (``None``: any of HIT / MISS-GENERATED). Returns the bytes."""
    status, headers, body = answer
    label = f"{what}: " if what else ""
    assert status == 200, f"{label}expected 200, got {status}: {body[:500]!r}"
    content_type = headers.get("content-type", "")
    assert content_type.split(";")[0].strip() == MIME[fmt], f"{label}Content-Type {content_type!r}, expected {MIME[fmt]}"
    image_size(body, fmt)
    got = headers.get("x-cache-status")
    if cache is None:
        assert got in (HIT, MISS), f"{label}X-Cache-Status {got!r}"
    else:
        assert got == cache, f"{label}X-Cache-Status {got!r}, expected {cache!r}"
    return body


@dataclass
class Store:
    """Where a test's server keeps images: ``fs`` (the data dir, the default) or ``s3``."""

    kind: str
    bucket: Bucket | None = None

    @property
    def env(self) -> dict[str, str]:
        return self.bucket.env if self.bucket else {}

    def check(self, server: Server, headers: dict[str, str], body: bytes, *, derived: bool = False) -> str | None:
        """X-Cache-Store names this store and the image really is in it; for S3 X-S3-Key is
        the object's key (content-addressed under ``images/``, or under ``derived/`` for a
        converted answer) and the object holds exactly ``body``. Returns the S3 key."""
        assert headers.get("x-cache-store") == self.kind, f"X-Cache-Store {headers.get('x-cache-store')!r}, expected {self.kind!r}"
        if self.bucket is None:
            assert "x-s3-key" not in headers, f"X-S3-Key {headers.get('x-s3-key')!r} on the fs store"
            if not derived:
                stored = [
                    p for p in server.data_dir.rglob("*") if p.is_file() and p.stat().st_size == len(body) and p.read_bytes() == body
                ]
                assert stored, f"no file in the data dir {server.data_dir} holds the image served"
            return None
        key = headers.get("x-s3-key")
        assert key, f"no X-S3-Key on the s3 store: {headers}"
        if derived:
            assert key.startswith("derived/"), f"a converted image's X-S3-Key is {key!r}, expected derived/..."
        else:
            match = S3_IMAGE_KEY.match(key)
            assert match, f"X-S3-Key {key!r} is not images/<2 hex>/<blake3>.<ext>"
            digest = blake3.blake3(body).hexdigest()
            assert match.group(2) == digest and match.group(1) == digest[:2], (
                f"X-S3-Key {key!r} is not the BLAKE3 hash of the bytes served ({digest})"
            )
        status, stored = self.bucket.get(key)
        assert status == 200, f"GET {key} from the bucket {self.bucket.name}: {status} (keys: {self.bucket.keys()})"
        assert stored == body, f"the object {key} in the bucket differs from the image served"
        return key


@pytest.fixture(params=["fs", "s3"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "fs":
        return Store("fs")
    return Store("s3", request.getfixturevalue("s3_bucket"))


@pytest.fixture
def refs() -> Iterator[FakeFiles]:
    with FakeFiles() as files:
        yield files


def signed_url_via_api(server: Server, secret: str, params: dict[str, Any], expires_in: int = 3600) -> dict[str, Any]:
    status, _, raw = http(
        "POST", f"{server.url}/v1/signed-urls", json_body={"params": params, "expires_in": expires_in}, headers=bearer(secret)
    )
    assert status == 200, f"POST /v1/signed-urls -> {status}: {raw[:500]!r}"
    answer = json.loads(raw)
    assert isinstance(answer.get("url"), str) and isinstance(answer.get("expires_at"), int), answer
    return answer


def with_query(url: str, change: Any) -> str:
    """``url`` with its decoded query pairs passed through ``change(pairs) -> pairs``."""
    parts = urllib.parse.urlsplit(url)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(change(pairs))))


def replace_param(name: str, value: str) -> Any:
    return lambda pairs: [(k, value if k == name else v) for k, v in pairs]


def drop_param(name: str) -> Any:
    return lambda pairs: [(k, v) for k, v in pairs if k != name]


def flip(text: str) -> str:
    """``text`` with its last character changed to another hex digit (not merely its case: hex
    is case-insensitive, so `a` → `A` would still be the same signature)."""
    return text[:-1] + ("0" if text[-1].lower() != "0" else "1")


def wait_past(unix: int) -> None:
    """Sleeps until the wall clock is past ``unix`` seconds (plus a margin)."""
    delay = unix + 1.2 - time.time()
    if delay > 0:
        time.sleep(delay)


# ------------------------------------------------------------------------------------------
# the cache, on both stores
# ------------------------------------------------------------------------------------------


def test_miss_then_hit_then_reroll(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, store: Store) -> None:
    server = imgproxy.start({**openai_env(fake_openai), **store.env})
    url = api(server, prompt="a red fox", model="gpt-image-2")

    status, headers, first = answer = get(url)
    assert_image(answer, cache=MISS, what="first request")
    assert headers.get("x-model") == "gpt-image-2", f"X-Model {headers.get('x-model')!r}"
    assert "content-disposition" not in headers, f"Content-Disposition without a name: {headers['content-disposition']!r}"
    assert len(fake_openai.image_requests()) == 1
    assert first == fake_openai.images[0], "the URL API did not answer with the upstream's image"
    key = store.check(server, headers, first)

    status, headers, again = answer = get(url)
    assert_image(answer, cache=HIT, what="same request again")
    assert again == first, "a HIT must serve the cached bytes"
    assert len(fake_openai.image_requests()) == 1, "a HIT reached the upstream"
    assert headers.get("x-model") == "gpt-image-2"
    assert store.check(server, headers, again) == key

    # The fake answers every call with a new PNG, so a new generation shows in the bytes.
    answer = get(api(server, prompt="a red fox", model="gpt-image-2", reroll="true"))
    rerolled = assert_image(answer, cache=MISS, what="reroll=true")
    assert len(fake_openai.image_requests()) == 2, "reroll=true must call the upstream again"
    assert rerolled != first and rerolled == fake_openai.images[1]
    store.check(server, answer[1], rerolled)

    answer = get(url)
    assert assert_image(answer, cache=HIT, what="after the reroll") == rerolled, "the reroll must replace the cached entry"

    answer = get(url, headers={"Cache-Control": "no-cache"})
    fresh = assert_image(answer, cache=MISS, what="Cache-Control: no-cache")
    assert fresh != rerolled and len(fake_openai.image_requests()) == 3
    assert assert_image(get(url), cache=HIT, what="after no-cache") == fresh

    # Another parameter value is another cache entry.
    answer = get(api(server, prompt="a red fox", model="gpt-image-2", quality="low"))
    assert_image(answer, cache=MISS, what="quality=low")
    assert len(fake_openai.image_requests()) == 4
    assert fake_openai.image_requests()[-1].json.get("quality") == "low"


def test_names_recall_conversion_and_restart(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, store: Store) -> None:
    server = imgproxy.start({**openai_env(fake_openai), **store.env})
    prompt = {"prompt": "hero bottle shot", "model": "gpt-image-2"}

    status, headers, hero = answer = get(api(server, **prompt, filename="hero"))
    assert_image(answer, cache=MISS, what="generate named hero")
    assert headers.get("content-disposition") == 'inline; filename="hero.png"', headers.get("content-disposition")
    store.check(server, headers, hero)
    width, height = image_size(hero, "png")

    for alias in ("filename", "name", "slug"):
        status, headers, body = answer = get(api(server, **{alias: "hero"}))
        assert_image(answer, cache=HIT, what=f"recall by {alias}=hero")
        assert body == hero, f"{alias}=hero did not recall the stored image"
        assert headers.get("content-disposition") == 'inline; filename="hero.png"', headers.get("content-disposition")
        assert headers.get("x-model") == "gpt-image-2", f"X-Model of a recall is {headers.get('x-model')!r}"
        store.check(server, headers, body)

    status, headers, body = answer = get(api(server, filename="hero", ext="png"))
    assert_image(answer, cache=None, what="filename=hero&ext=png")
    assert body == hero, "ext=png of a PNG must be the PNG itself"

    converted: dict[str, bytes] = {}
    for ext in ("jpg", "webp"):
        status, headers, body = answer = get(api(server, filename="hero", ext=ext))
        assert_image(answer, cache=None, fmt=ext, what=f"filename=hero&ext={ext}")
        assert image_size(body, ext) == (width, height), f"ext={ext} changed the image's size"
        assert headers.get("content-disposition") == f'inline; filename="hero.{ext}"', headers.get("content-disposition")
        store.check(server, headers, body, derived=True)
        converted[ext] = body
    status, headers, body = get(api(server, filename="hero", ext="jpeg"))
    assert status == 200 and body[:3] == b"\xff\xd8\xff", f"ext=jpeg: {status} {body[:100]!r}"

    status, headers, body = get(api(server, filename="hero", ext="gif"))
    assert_error_envelope(status, headers, body, expected_status=400, param="ext")
    status, headers, body = get(api(server, filename="no-such-name"))
    assert_error_envelope(status, headers, body, expected_status=404, param="filename")

    # The named generation is also the cache entry of its parameters.
    answer = get(api(server, **prompt))
    assert assert_image(answer, cache=HIT, what="the named generation's parameters") == hero
    assert len(fake_openai.image_requests()) == 1, "recalls and conversions must not call the upstream"

    server = imgproxy.restart(server)
    answer = get(api(server, filename="hero"))
    assert assert_image(answer, cache=HIT, what="recall after restart") == hero
    store.check(server, answer[1], hero)
    answer = get(api(server, filename="hero", ext="jpg"))
    assert assert_image(answer, cache=None, fmt="jpg", what="conversion after restart") == converted["jpg"]
    answer = get(api(server, **prompt))
    assert assert_image(answer, cache=HIT, what="cache after restart") == hero
    status, headers, body = get(api(server, filename="no-such-name"))
    assert_error_envelope(status, headers, body, expected_status=404, param="filename")
    assert len(fake_openai.image_requests()) == 1, "the cache did not survive the restart"


def test_twenty_identical_concurrent_requests_make_one_upstream_call(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, store: Store
) -> None:
    server = imgproxy.start({**openai_env(fake_openai), **store.env})
    fake_openai.delay_images(1.0)  # all twenty arrive while the first is still generating
    url = api(server, prompt="twenty at once", model="gpt-image-2")
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: get(url, timeout=30), range(20)))
    for status, _, body in answers:
        assert status == 200, f"{status}: {body[:300]!r}"
    bodies = {body for _, _, body in answers}
    assert len(bodies) == 1, f"{len(bodies)} different images for one request"
    assert len(fake_openai.image_requests()) == 1, f"{len(fake_openai.image_requests())} upstream calls for 20 identical requests"
    statuses = sorted(headers.get("x-cache-status", "") for _, headers, _ in answers)
    assert statuses.count(MISS) == 1 and statuses.count(HIT) == 19, f"X-Cache-Status values: {statuses}"
    status, headers, body = answers[0]
    store.check(server, headers, body)


def test_a_failed_generation_fails_its_waiters_and_is_not_cached(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    server = imgproxy.start(openai_env(fake_openai))
    fake_openai.then(Reply(status=500, body={"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}, delay=1.0))
    url = api(server, prompt="fails once", model="gpt-image-2")
    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda _: get(url, timeout=30), range(5)))
    for status, headers, body in answers:
        assert_error_envelope(status, headers, body, expected_status=502)
    assert len(fake_openai.image_requests()) == 1, "the waiters of a failed generation called the upstream again"
    # the failure was not cached: the next request generates
    assert assert_image(get(url), cache=MISS, what="after the failure") == fake_openai.images[0]
    assert len(fake_openai.image_requests()) == 2


# ------------------------------------------------------------------------------------------
# parameters, path forms, reference images, the default model
# ------------------------------------------------------------------------------------------


def test_query_parameters_are_typed_and_refused_ones_name_themselves(server: Server) -> None:
    small = {"prompt": "a typed fox", "size": "64x64"}
    for name, value in [
        ("response_format", "url"),
        ("stream", "true"),
        ("partial_images", "1"),
        ("async", "true"),
        ("callback_url", "http://127.0.0.1:9/cb"),
        ("ext", "gif"),
        ("n", "2"),
        ("seed", "seven"),
        ("size", "13x13"),
        ("reroll", "perhaps"),
    ]:
        status, headers, body = get(api(server, **{**small, name: value}))
        assert_error_envelope(status, headers, body, expected_status=400, param=name)
    status, headers, body = get(api(server, prompt="x", model="no-such-model"))
    assert_error_envelope(status, headers, body, expected_status=404, code="model_not_found")
    status, headers, body = get(f"{server.url}/api/generate")
    assert_error_envelope(status, headers, body, expected_status=400)

    status, headers, body = answer = get(api(server, **small, n="1", seed="7"))
    seeded = assert_image(answer, cache=MISS, what="seed=7&size=64x64")
    assert image_size(seeded, "png") == (64, 64)
    assert headers.get("x-model") == "placeholder"
    # with a seed the placeholder is deterministic: a reroll generates anew, the same image
    answer = get(api(server, **small, seed="7", reroll="true"))
    assert assert_image(answer, cache=MISS, what="seeded reroll") == seeded
    # without a seed every generation differs
    unseeded = assert_image(get(api(server, **small)), cache=MISS, what="unseeded")
    rerolled = assert_image(get(api(server, **small, reroll="1")), cache=MISS, what="unseeded reroll")
    assert rerolled != unseeded, "the placeholder without a seed drew the same image twice"
    assert assert_image(get(api(server, **small)), cache=HIT) == rerolled

    for ext in ("jpg", "webp", "png"):
        body = assert_image(get(api(server, **small, seed="8", ext=ext)), cache=None, fmt=ext, what=f"ext={ext}")
        assert image_size(body, ext) == (64, 64)

    square = assert_image(get(api(server, prompt="a square", ar="1:1", image_size="512", seed="1")), cache=MISS)
    width, height = image_size(square, "png")
    assert width == height, f"ar=1:1 gave {width}x{height}"


def test_path_forms_and_reserved_paths(server: Server) -> None:
    answer = get(f"{server.url}/a+red+fox")
    status, headers, body = answer
    first = assert_image(answer, cache=MISS, what="GET /a+red+fox")
    assert headers.get("x-model") == "placeholder", headers.get("x-model")
    width, height = image_size(first, "png")
    assert abs(width / height - 16 / 9) < 0.03, f"no size or ar: expected the default 16:9, got {width}x{height}"

    assert assert_image(get(f"{server.url}/a+red+fox"), cache=HIT, what="again") == first
    assert assert_image(get(f"{server.url}/a%20red%20fox"), cache=HIT, what="/a%20red%20fox") == first
    assert assert_image(get(api(server, prompt="a red fox")), cache=HIT, what="the same as a query") == first
    status, headers, body = answer = get(f"{server.url}/a+red+fox/placeholder")
    assert assert_image(answer, cache=HIT, what="/a+red+fox/placeholder") == first
    assert headers.get("x-model") == "placeholder"
    answer = get(f"{server.url}/a+red+fox/placeholder?seed=3&size=32x32")
    assert image_size(assert_image(answer, cache=MISS, what="path form with query"), "png") == (32, 32)

    for path in ("/v1/nonexistent", "/api/nonexistent", "/favicon.ico", "/robots.txt", "/metrics/x"):
        status, headers, body = get(f"{server.url}{path}")
        assert_error_envelope(status, headers, body, expected_status=404)
    status, _, _ = get(f"{server.url}/healthz")
    assert status == 200
    status, headers, body = get(f"{server.url}/no+such+model/not-a-model")
    assert_error_envelope(status, headers, body, expected_status=404, code="model_not_found")


def test_reference_images_are_part_of_the_cache_key(imgproxy: ImgproxyFactory, refs: FakeFiles) -> None:
    server = imgproxy.start({"IMGPROXY_FETCH_ALLOW_HOSTS": f"127.0.0.1:{refs.port}"})
    a, b = refs.link("/ref-a.png"), refs.link("/ref-b.png")
    base = {"prompt": "mix these", "model": "placeholder", "size": "64x64", "seed": "3"}

    plain = assert_image(get(api(server, **base)), cache=MISS, what="no reference")
    with_a = assert_image(get(api(server, **base, image=a)), cache=MISS, what="image=a")
    assert with_a != plain, "the placeholder did not use the reference image"
    assert "/ref-a.png" in refs.gets(), "imgproxy did not fetch the reference"
    with_ab = assert_image(get(api(server, **base, image=[a, b])), cache=MISS, what="image=a&image=b")
    assert with_ab not in (plain, with_a)
    # the aliases give the same request, so the same entry
    assert assert_image(get(api(server, **base, images=f"{a},{b}")), cache=HIT, what="images=a,b") == with_ab
    assert assert_image(get(api(server, **base, image_url=a)), cache=HIT, what="image_url=a") == with_a
    assert assert_image(get(api(server, **base, init_image=a)), cache=HIT, what="init_image=a") == with_a

    # the key holds the reference's content hash, not its URL
    refs.files["/ref-a.png"] = Response(200, solid_png(4242), content_type="image/png")
    changed = assert_image(get(api(server, **base, image=a)), cache=MISS, what="image=a with new content")
    assert changed != with_a

    status, headers, body = get(api(server, **base, image=[a, b, a, b, a]))
    error = assert_error_envelope(status, headers, body, expected_status=400)
    assert error["param"] in ("image", "images"), error


def test_default_model_is_flux_1_1_pro_when_replicate_is_configured(imgproxy: ImgproxyFactory) -> None:
    with FakeReplicate(REPLICATE_TOKEN) as replicate:
        env = {"REPLICATE_API_TOKEN": REPLICATE_TOKEN, "REPLICATE_BASE_URL": replicate.url}
        server = imgproxy.start(env)
        status, headers, body = answer = get(api(server, prompt="neon city"))
        assert_image(answer, cache=MISS, what="no model, Replicate configured")
        assert headers.get("x-model") == "black-forest-labs/flux-1.1-pro", f"X-Model {headers.get('x-model')!r}"
        assert body == replicate.outputs[0]
        creates = replicate.create_calls()
        assert [c.path for c in creates] == ["/v1/models/black-forest-labs/flux-1.1-pro/predictions"], replicate.summary()
        assert creates[0].json["input"].get("aspect_ratio") == "16:9", creates[0].json
        assert assert_image(get(api(server, prompt="neon city")), cache=HIT) == body
        assert len(replicate.create_calls()) == 1
        assert replicate.problems == [], replicate.problems

        server.stop()
        server = imgproxy.start({**env, "IMGPROXY_URL_API_DEFAULT_MODEL": "placeholder"})
        status, headers, body = answer = get(api(server, prompt="neon city", size="32x32"))
        assert_image(answer, cache=MISS, what="IMGPROXY_URL_API_DEFAULT_MODEL=placeholder")
        assert headers.get("x-model") == "placeholder", headers.get("x-model")
        assert len(replicate.create_calls()) == 1


def test_default_model_is_flux_1_1_pro_on_bfl_when_only_bfl_is_configured(imgproxy: ImgproxyFactory) -> None:
    with FakeBfl(BFL_KEY) as bfl:
        server = imgproxy.start({"BFL_API_KEY": BFL_KEY, "BFL_BASE_URL": bfl.api_url})
        status, headers, body = answer = get(api(server, prompt="neon city"))
        assert_image(answer, cache=MISS, what="no model, BFL configured")
        assert headers.get("x-model") == "flux-pro-1.1", f"X-Model {headers.get('x-model')!r}"
        submits = bfl.submit_calls()
        assert len(submits) == 1 and submits[0].path.endswith("/flux-pro-1.1"), bfl.summary()
        assert bfl.problems == [], bfl.problems


# ------------------------------------------------------------------------------------------
# tenants, signed URLs, public mode
# ------------------------------------------------------------------------------------------


def upload_file(server: Server, secret: str, data: bytes, filename: str = "ref.png") -> dict[str, Any]:
    """POST /v1/files as multipart/form-data over raw HTTP."""
    boundary = f"----e2e{secrets.token_hex(8)}"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nvision\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    status, _, raw = http(
        "POST",
        f"{server.url}/v1/files",
        body=b"".join(parts),
        headers={**bearer(secret), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert status in (200, 201), f"POST /v1/files -> {status}: {raw[:500]!r}"
    return json.loads(raw)


def test_keys_do_not_share_names_cache_or_files(imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI) -> None:
    server = imgproxy.start({**openai_env(fake_openai), "IMGPROXY_MASTER_KEY": MASTER_KEY})
    key_a, secret_a = create_key(server)
    key_b, secret_b = create_key(server)
    request = {"prompt": "a shared prompt", "model": "gpt-image-2", "quality": "low"}

    status, headers, a_image = answer = get(api(server, **request), headers=bearer(secret_a))
    assert_image(answer, cache=MISS, what="key A")
    remaining = headers.get("x-credits-remaining")
    assert remaining is not None and int(remaining) < 10_000, f"X-Credits-Remaining {remaining!r}"
    status, headers, body = answer = get(api(server, **request), headers=bearer(secret_a))
    assert assert_image(answer, cache=HIT, what="key A again") == a_image
    assert headers.get("x-credits-remaining") == remaining, "a HIT must not be charged"
    assert admin_balance(server, key_a["id"]) == int(remaining)

    b_image = assert_image(get(api(server, **request), headers=bearer(secret_b)), cache=MISS, what="key B, same prompt")
    assert b_image != a_image and len(fake_openai.image_requests()) == 2, "key B was served key A's cached image"
    operator = assert_image(get(api(server, **request), headers=bearer(MASTER_KEY)), cache=MISS, what="master key")
    assert operator not in (a_image, b_image) and len(fake_openai.image_requests()) == 3
    assert assert_image(get(api(server, **request), headers=bearer(secret_b)), cache=HIT) == b_image

    named = assert_image(get(api(server, prompt="a's hero", model="gpt-image-2", filename="a-hero"), headers=bearer(secret_a)), cache=MISS)
    assert assert_image(get(api(server, filename="a-hero"), headers=bearer(secret_a)), cache=HIT) == named
    for secret in (secret_b, MASTER_KEY):
        status, headers, body = get(api(server, filename="a-hero"), headers=bearer(secret))
        assert_error_envelope(status, headers, body, expected_status=404, param="filename")

    file_a = upload_file(server, secret_a, solid_png(77, 32))
    assert file_a["id"].startswith("file-"), file_a
    status, headers, body = get(f"{server.url}/v1/files/{file_a['id']}", headers=bearer(secret_b))
    assert_error_envelope(status, headers, body, expected_status=404)
    status, headers, body = get(f"{server.url}/v1/files/{file_a['id']}/content", headers=bearer(secret_b))
    assert_error_envelope(status, headers, body, expected_status=404)
    status, _, raw = get(f"{server.url}/v1/files", headers=bearer(secret_b))
    assert status == 200 and file_a["id"] not in raw.decode(), raw[:500]
    ref = {"prompt": "with a file", "model": "placeholder", "size": "32x32", "seed": "1", "image": file_a["id"]}
    status, headers, body = get(api(server, **ref), headers=bearer(secret_b))
    error = assert_error_envelope(status, headers, body, expected_status=status)
    assert status in (400, 404) and (status == 404 or error["param"] == "image"), f"{status} {error}"
    assert_image(get(api(server, **ref), headers=bearer(secret_a)), cache=MISS, what="key A with its own file")


def test_metered_key_pays_once_for_concurrent_identical_requests_and_nothing_for_hits(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI
) -> None:
    server = imgproxy.start({**openai_env(fake_openai), "IMGPROXY_MASTER_KEY": MASTER_KEY})
    key, secret = create_key(server, credits=1000)
    fake_openai.delay_images(1.0)
    url = api(server, prompt="metered at once", model="gpt-image-2", quality="low")
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: get(url, headers=bearer(secret), timeout=30), range(10)))
    fake_openai.delay_images(0)
    assert [a[0] for a in answers] == [200] * 10, [(a[0], a[2][:200]) for a in answers]
    assert len(fake_openai.image_requests()) == 1
    price = 1000 - admin_balance(server, key["id"])
    assert price > 0, "the generation was not charged"
    assert {a[1].get("x-credits-remaining") for a in answers} == {str(1000 - price)}, (
        f"ten identical concurrent requests must be charged once: {[a[1].get('x-credits-remaining') for a in answers]}"
    )

    # A key with exactly one generation's worth: the generation empties it, a HIT is still served
    # (it costs nothing), a new generation is refused.
    small, small_secret = create_key(server, credits=price)
    answer = get(api(server, prompt="only one", model="gpt-image-2", quality="low"), headers=bearer(small_secret))
    paid = assert_image(answer, cache=MISS, what="the last credits")
    assert answer[1].get("x-credits-remaining") == "0"
    answer = get(api(server, prompt="only one", model="gpt-image-2", quality="low"), headers=bearer(small_secret))
    assert assert_image(answer, cache=HIT, what="a HIT on an empty balance") == paid
    status, headers, body = get(api(server, prompt="one more", model="gpt-image-2", quality="low"), headers=bearer(small_secret))
    assert_error_envelope(status, headers, body, expected_status=402, code="insufficient_credits")
    assert len(fake_openai.image_requests()) == 2
    assert admin_balance(server, small["id"]) == 0


def test_signed_urls_from_the_api_and_the_cli(imgproxy: ImgproxyFactory, refs: FakeFiles) -> None:
    env = {"IMGPROXY_MASTER_KEY": MASTER_KEY, "IMGPROXY_FETCH_ALLOW_HOSTS": f"127.0.0.1:{refs.port}"}
    server = imgproxy.start(env)
    key, secret = create_key(server, credits=1000)
    other, _ = create_key(server)
    request = {"prompt": "a signed fox", "model": "placeholder", "size": "64x64"}

    # Without a signature or a key, the URL API is closed on a server with a master key.
    status, headers, body = get(api(server, **request))
    assert_error_envelope(status, headers, body, expected_status=401)

    short = signed_url_via_api(server, secret, {**request, "seed": "1"}, expires_in=2)
    assert_image(get(short["url"]), cache=MISS, what="a two-second signed URL within its lifetime")
    links = [refs.link("/ref-a.png"), refs.link("/ref-b.png")]
    signed = signed_url_via_api(server, secret, {**request, "filename": "signed-hero", "image": links}, expires_in=3600)
    url = signed["url"]
    assert url.startswith(f"{server.url}/api/generate?"), url
    assert abs(signed["expires_at"] - (time.time() + 3600)) < 60, signed
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query.get("kid") == [key["id"]], query
    assert query.get("exp") == [str(signed["expires_at"])], query
    assert query.get("image") == links and query.get("filename") == ["signed-hero"] and query.get("sig"), query

    status, headers, first = answer = get(url)
    assert_image(answer, cache=MISS, what="signed URL without Authorization")
    assert headers.get("content-disposition") == 'inline; filename="signed-hero.png"'
    assert sorted(refs.gets()) == ["/ref-a.png", "/ref-b.png"], refs.gets()
    remaining = headers.get("x-credits-remaining")
    assert remaining is not None and int(remaining) < 1000, f"a signed URL bills its key: X-Credits-Remaining {remaining!r}"
    assert admin_balance(server, key["id"]) == int(remaining)
    assert assert_image(get(url), cache=HIT, what="signed URL again") == first
    # the name belongs to the key that signed
    assert assert_image(get(api(server, filename="signed-hero"), headers=bearer(secret)), cache=HIT) == first

    for what, tampered in [
        ("prompt changed", with_query(url, replace_param("prompt", "a different fox"))),
        ("exp changed", with_query(url, replace_param("exp", str(signed["expires_at"] + 100)))),
        ("sig changed", with_query(url, lambda pairs: [(k, flip(v) if k == "sig" else v) for k, v in pairs])),
        ("kid changed", with_query(url, replace_param("kid", other["id"]))),
        ("param added", with_query(url, lambda pairs: pairs + [("seed", "5")])),
        ("image removed", with_query(url, lambda pairs: [p for p in pairs if p != ("image", links[1])])),
    ]:
        status, headers, body = get(tampered)
        assert_error_envelope(status, headers, body, expected_status=403)
        assert "x-cache-status" not in headers, what
    status, headers, body = get(with_query(url, drop_param("sig")))
    assert_error_envelope(status, headers, body, expected_status=status)
    assert status in (401, 403), f"sig removed: {status}"

    # The signature covers the path: the same query on the path form is refused.
    signed_path = signed_url_via_api(server, secret, {**request, "seed": "2"})
    query_text = urllib.parse.urlsplit(signed_path["url"]).query
    for path in ("/a+signed+fox", "/a+signed+fox/placeholder"):
        status, headers, body = get(f"{server.url}{path}?{query_text}")
        assert_error_envelope(status, headers, body, expected_status=403)
    # ...but not the order or the percent-encoding of the parameters.
    reordered = with_query(signed_path["url"], lambda pairs: list(reversed(pairs)))
    reordered = reordered.replace("+", "%20")
    assert_image(get(reordered), cache=MISS, what="signed URL, parameters reordered and %20-encoded")
    assert_image(get(signed_path["url"]), cache=HIT, what="the same signed URL as issued")

    # The signer adds kid, exp and sig itself; a bad lifetime and a missing key are refused.
    for name in ("kid", "exp", "sig"):
        status, headers, body = http(
            "POST", f"{server.url}/v1/signed-urls", json_body={"params": {**request, name: other["id"]}}, headers=bearer(secret)
        )
        error = assert_error_envelope(status, headers, body, expected_status=400)
        assert name in (error["param"] or ""), error
    for expires_in in (0, 10**12):
        status, headers, body = http(
            "POST", f"{server.url}/v1/signed-urls", json_body={"params": request, "expires_in": expires_in}, headers=bearer(secret)
        )
        assert_error_envelope(status, headers, body, expected_status=400, param="expires_in")
    status, headers, body = http("POST", f"{server.url}/v1/signed-urls", json_body={"params": request})
    assert_error_envelope(status, headers, body, expected_status=401)

    # Signed with the master key: the operator's URL, unmetered.
    operator = signed_url_via_api(server, MASTER_KEY, {**request, "prompt": "an operator fox"})
    assert "kid" not in urllib.parse.parse_qs(urllib.parse.urlsplit(operator["url"]).query), operator
    status, headers, body = answer = get(operator["url"])
    assert_image(answer, cache=MISS, what="operator-signed URL")
    assert "x-credits-remaining" not in headers, "an operator URL is unmetered"

    # The CLI signs with the same secret (generated into the data dir: no IMGPROXY_URL_SECRET).
    cli = [
        str(imgproxy_bin()),
        "sign-url",
        "--data-dir",
        str(server.data_dir),
        "--key-id",
        key["id"],
        "--expires-in",
        "600",
        "--base-url",
        server.url,
        "prompt=a+cli+fox&model=placeholder&size=32x32",
    ]
    done = subprocess.run(cli, env=clean_env(env), capture_output=True, text=True, timeout=30, cwd=server.data_dir.parent)
    assert done.returncode == 0, f"imgproxy sign-url exited {done.returncode}: {done.stderr[-2000:]}"
    cli_url = done.stdout.strip().splitlines()[-1]
    assert cli_url.startswith(f"{server.url}/api/generate?") and "sig=" in cli_url, done.stdout
    cli_query = urllib.parse.parse_qs(urllib.parse.urlsplit(cli_url).query)
    assert cli_query.get("prompt") == ["a cli fox"] and cli_query.get("kid") == [key["id"]], cli_query
    exp = int(cli_query["exp"][0])
    assert abs(exp - (time.time() + 600)) < 60, cli_query
    cli_image = assert_image(get(cli_url), cache=MISS, what="CLI-signed URL")
    assert image_size(cli_image, "png") == (32, 32)
    status, headers, body = get(with_query(cli_url, replace_param("size", "64x64")))
    assert_error_envelope(status, headers, body, expected_status=403)

    operator_cli = [arg for arg in cli if arg not in ("--key-id", key["id"])]
    done = subprocess.run(operator_cli, env=clean_env(env), capture_output=True, text=True, timeout=30, cwd=server.data_dir.parent)
    assert done.returncode == 0, f"imgproxy sign-url without --key-id exited {done.returncode}: {done.stderr[-2000:]}"
    status, headers, body = answer = get(done.stdout.strip().splitlines()[-1])
    assert_image(answer, cache=None, what="CLI-signed operator URL")
    assert "x-credits-remaining" not in headers
    unknown_cli = [arg if arg != key["id"] else "key_doesnotexist" for arg in cli]
    done = subprocess.run(unknown_cli, env=clean_env(env), capture_output=True, text=True, timeout=30, cwd=server.data_dir.parent)
    assert done.returncode != 0 and "key_doesnotexist" in done.stderr, (
        f"sign-url for an unknown key id must fail naming it: {done.returncode} {done.stdout!r} {done.stderr[-500:]!r}"
    )

    # Expiry: the two-second URL worked while it was valid and is refused once it is past.
    wait_past(short["expires_at"])
    status, headers, body = get(short["url"])
    assert_error_envelope(status, headers, body, expected_status=403)

    # The generated secret survives a restart on the same data dir.
    server = imgproxy.restart(server)
    assert assert_image(get(url), cache=HIT, what="signed URL after restart") == first
    assert assert_image(get(cli_url), cache=HIT, what="CLI URL after restart") == cli_image

    # A revoked key's URLs stop working.
    status, _, raw = http("POST", f"{server.url}/v1/admin/keys/{key['id']}/revoke", headers=bearer(MASTER_KEY))
    assert status == 200, raw[:300]
    status, headers, body = get(url)
    assert_error_envelope(status, headers, body, expected_status=status)
    assert status in (401, 403), f"a revoked key's signed URL answered {status}"


def test_generated_url_secret_file_is_private(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    secrets_files = [p for p in server.data_dir.iterdir() if "secret" in p.name]
    assert secrets_files, f"no generated URL secret in the data dir: {sorted(p.name for p in server.data_dir.iterdir())}"
    for path in secrets_files:
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, (
            f"{path.name} has mode {mode:o}: anyone who can read it can sign URLs for every key; it must be 0600"
        )


def test_explicit_url_secret_is_shared_with_the_cli_and_a_short_one_is_refused(imgproxy: ImgproxyFactory) -> None:
    secret_env = {"IMGPROXY_MASTER_KEY": MASTER_KEY, "IMGPROXY_URL_SECRET": "e2e-url-secret-" + "0123456789" * 4}
    server = imgproxy.start(secret_env)
    key, _ = create_key(server)

    def sign(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        command = [str(imgproxy_bin()), "sign-url", "--data-dir", str(server.data_dir), "--key-id", key["id"]]
        command += ["--base-url", server.url, "prompt=shared+secret&model=placeholder&size=32x32"]
        return subprocess.run(command, env=clean_env(env), capture_output=True, text=True, timeout=30, cwd=server.data_dir.parent)

    done = sign(secret_env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_image(get(done.stdout.strip().splitlines()[-1]), cache=MISS, what="URL signed with IMGPROXY_URL_SECRET")
    done = sign({**secret_env, "IMGPROXY_URL_SECRET": "another-secret-" + "9876543210" * 4})
    assert done.returncode == 0, done.stderr[-2000:]
    status, headers, body = get(done.stdout.strip().splitlines()[-1])
    assert_error_envelope(status, headers, body, expected_status=403)

    # A secret shorter than 32 characters is a startup error.
    short = imgproxy.start({"IMGPROXY_URL_SECRET": "too-short"}, wait=False)
    assert short.proc is not None
    try:
        code = short.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("imgproxy started with a 9-character IMGPROXY_URL_SECRET")
    short.exit_code = code
    assert code != 0 and "32" in short.log(), short.log()[-1000:]


def start_public(imgproxy: ImgproxyFactory, tmp_path: Path, limits: str = "") -> tuple[Server, dict[str, Any], str]:
    """A server in public mode billing a fresh key of 100 credits (made by a first run on the same
    data dir), with ``limits`` added to its ``[public]`` section: (server, key, secret)."""
    setup = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    key, secret = create_key(setup, credits=100)
    setup.stop()
    config = tmp_path / "public.toml"
    config.write_text(f'[public]\nkey_id = "{key["id"]}"\n{limits}')
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY}, data_dir=setup.data_dir, args=["--config", str(config)])
    return server, key, secret


def test_public_mode_serves_without_auth_and_bills_and_limits_its_key(imgproxy: ImgproxyFactory, tmp_path: Path) -> None:
    server, key, _ = start_public(imgproxy, tmp_path, limits="rpm = 5\nimages_per_minute = 10\n")

    first = b""
    for i in range(4):
        status, headers, body = answer = get(api(server, prompt=f"public {i}", model="placeholder", size="32x32"))
        assert_image(answer, cache=MISS, what=f"public request {i + 1}")
        assert headers.get("x-credits-remaining") == str(99 - i), f"X-Credits-Remaining {headers.get('x-credits-remaining')!r}"
        first = first or body
    status, headers, body = answer = get(api(server, prompt="public 0", model="placeholder", size="32x32"))
    assert assert_image(answer, cache=HIT, what="public request 5, cached") == first
    assert headers.get("x-credits-remaining") == "96", "a public HIT must not be charged"
    assert admin_balance(server, key["id"]) == 96, "public requests must be billed to the configured key"
    status, headers, body = get(api(server, prompt="public 6", model="placeholder", size="32x32"))
    assert_error_envelope(status, headers, body, expected_status=429)
    retry_after = headers.get("retry-after")
    # Up to 61: per-minute limits count whole seconds, so a slot frees up to a second late.
    assert retry_after is not None and re.fullmatch(r"\d+", retry_after) and 1 <= int(retry_after) <= 61, retry_after
    assert admin_balance(server, key["id"]) == 96

    # Public mode opens the URL API only, not /v1.
    status, headers, body = http(
        "POST", f"{server.url}/v1/images/generations", json_body={"model": "placeholder", "prompt": "p", "size": "32x32"}
    )
    assert_error_envelope(status, headers, body, expected_status=401)


def test_visitors_cannot_regenerate_signed_urls_or_touch_the_keys_names(imgproxy: ImgproxyFactory, tmp_path: Path) -> None:
    """What reaches a page's visitors (a signed URL, public mode) cannot spend the key by a
    hard reload's `Cache-Control: no-cache`, nor read or re-point the key's own names."""
    server, key, secret = start_public(imgproxy, tmp_path)

    signed = signed_url_via_api(server, secret, {"prompt": "a signed owl", "model": "placeholder", "size": "32x32"})
    first = assert_image(get(signed["url"]), cache=MISS, what="signed URL")
    balance = admin_balance(server, key["id"])
    again = assert_image(get(signed["url"], headers={"Cache-Control": "no-cache"}), cache=HIT, what="hard reload")
    assert again == first and admin_balance(server, key["id"]) == balance, "a reload must not regenerate"

    # The key names an image; the public can neither recall nor replace it.
    named = api(server, prompt="the key's hero", model="placeholder", size="32x32", filename="hero")
    hero = assert_image(get(named, headers=bearer(secret)), cache=MISS, what="the key names hero")
    status, headers, body = get(api(server, filename="hero"))
    assert_error_envelope(status, headers, body, expected_status=404, param="filename")
    public = assert_image(
        get(api(server, prompt="a vandal's hero", model="placeholder", size="32x32", filename="hero")),
        cache=MISS,
        what="a public request naming hero",
    )
    assert public != hero
    recalled = assert_image(get(api(server, filename="hero"), headers=bearer(secret)), cache=HIT, what="the key's hero")
    assert recalled == hero, "a public request re-pointed the key's name"
    assert assert_image(get(api(server, filename="hero")), cache=HIT, what="the public's own hero") == public


# ------------------------------------------------------------------------------------------
# POST /v1/images/generations: cached, and its URLs are signed
# ------------------------------------------------------------------------------------------


def test_generations_endpoint_is_cached_and_its_image_urls_are_signed(imgproxy: ImgproxyFactory, store: Store) -> None:
    server = imgproxy.start(store.env)
    generations = f"{server.url}/v1/images/generations"
    request = {"model": "placeholder", "prompt": "a cached kettle", "size": "32x32"}

    status, headers, raw = http("POST", generations, json_body=request)
    assert status == 200 and headers.get("x-cache-status") == MISS, f"{status} {headers.get('x-cache-status')} {raw[:300]!r}"
    first = json.loads(raw)["data"][0]["b64_json"]
    status, headers, raw = http("POST", generations, json_body=request)
    assert status == 200 and headers.get("x-cache-status") == HIT, f"{status} {headers.get('x-cache-status')}"
    assert json.loads(raw)["data"][0]["b64_json"] == first
    status, headers, raw = http("POST", generations, json_body={**request, "reroll": True})
    assert status == 200 and headers.get("x-cache-status") == MISS, f"reroll: {status} {headers.get('x-cache-status')} {raw[:300]!r}"
    rerolled = json.loads(raw)["data"][0]["b64_json"]
    assert rerolled != first, "reroll without a seed drew the same image"
    status, headers, raw = http("POST", generations, json_body=request)
    assert headers.get("x-cache-status") == HIT and json.loads(raw)["data"][0]["b64_json"] == rerolled

    status, headers, raw = http("POST", generations, json_body={**request, "response_format": "url"})
    assert status == 200, raw[:500]
    url = json.loads(raw)["data"][0]["url"]
    match = re.fullmatch(rf"{re.escape(server.url)}/images/([0-9a-f]{{64}})\.png\?(.*)", url)
    assert match, f"image URL {url!r} is not {server.url}/images/<blake3>.png?exp=..&sig=.."
    query = urllib.parse.parse_qs(match.group(2))
    assert set(query) >= {"exp", "sig"}, query
    assert abs(int(query["exp"][0]) - (time.time() + 604800)) < 120, f"default URL lifetime is 7 days: {query}"
    status, headers, body = get(url)
    assert status == 200 and body[:8] == PNG_SIGNATURE, f"{status} {body[:200]!r}"
    assert blake3.blake3(body).hexdigest() == match.group(1), "the image URL is not content-addressed"

    for what, tampered in [
        ("sig removed", with_query(url, drop_param("sig"))),
        ("sig changed", with_query(url, lambda pairs: [(k, flip(v) if k == "sig" else v) for k, v in pairs])),
        ("exp changed", with_query(url, replace_param("exp", str(int(query["exp"][0]) + 60)))),
        ("query removed", url.split("?")[0]),
    ]:
        status, headers, body = get(tampered)
        assert_error_envelope(status, headers, body, expected_status=403)


def test_image_urls_expire_after_the_configured_ttl(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_URL_TTL_SECS": "2"})
    status, _, raw = http(
        "POST",
        f"{server.url}/v1/images/generations",
        json_body={"model": "placeholder", "prompt": "short-lived", "size": "32x32", "response_format": "url"},
    )
    assert status == 200, raw[:500]
    url = json.loads(raw)["data"][0]["url"]
    exp = int(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["exp"][0])
    assert abs(exp - (time.time() + 2)) < 5, url
    status, _, body = get(url)
    assert status == 200 and body[:8] == PNG_SIGNATURE, f"within its lifetime: {status} {body[:200]!r}"
    wait_past(exp)
    status, headers, body = get(url)
    assert_error_envelope(status, headers, body, expected_status=403)


def test_two_instances_on_one_postgres_and_one_bucket_generate_once(
    imgproxy: ImgproxyFactory, fake_openai: FakeOpenAI, s3_bucket: Bucket, postgres_url: str
) -> None:
    """Scale-out: identical requests spread over two instances sharing Postgres and S3 make
    one upstream call; the second instance waits for the first one's cache entry."""
    shared = {
        **openai_env(fake_openai),
        **s3_bucket.env,
        "IMGPROXY_DATABASE_URL": postgres_url,
        "IMGPROXY_URL_SECRET": "s" * 40,
    }
    servers = [imgproxy.start(shared), imgproxy.start(shared)]
    fake_openai.delay_images(1.5)
    urls = [api(server, prompt="one for both", model="gpt-image-2") for server in servers]
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda i: get(urls[i % 2], timeout=30), range(10)))
    for status, _, body in answers:
        assert status == 200, f"{status}: {body[:300]!r}"
    assert len({body for _, _, body in answers}) == 1
    assert len(fake_openai.image_requests()) == 1, f"{len(fake_openai.image_requests())} upstream calls"
    statuses = sorted(headers.get("x-cache-status", "") for _, headers, _ in answers)
    assert statuses.count(MISS) == 1 and statuses.count(HIT) == 9, statuses
