"""Seed 000 as its client sees it: every example URL of its document, sent unchanged apart from
the host (``https://imfin.it`` becomes the server; the reference images' hosts
``https://example.com`` and ``https://images.unsplash.com`` become a local file server with the
same paths and queries, since the tests reach no network), billed through the
``x-parse-session-token`` header a logged-in caller sends; the answer is the image with the
headers the document lists (``X-Cache-Status``, ``X-Cache-Store``, ``X-Model``,
``Content-Disposition`` when named). A short balance is 402 with a JSON error, as the document
says. Upstreams are the fakes: Replicate (seedream-4, ultra, svg, and the retired imagen4 and
gemini, redirected to nano-banana-2), Gemini (nano-banana-2, nano-banana-pro) and OpenAI
(gpt-image-2).
"""

from __future__ import annotations

import urllib.parse
from typing import Iterator

import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server
from fake_openai import FakeOpenAI, solid_png
from fake_upstreams import FakeFiles, FakeGemini, FakeReplicate, Response
from helpers import assert_error_envelope, http
from test_credits import MASTER_KEY, create_key
from test_providers import GEMINI_KEY, REPLICATE_TOKEN, gemini, replicate  # noqa: F401 - shared fixtures
from test_url_api import HIT, MISS, image_size

SEED_HOST = "https://imfin.it"
REFERENCE_HOSTS = ("https://example.com", "https://images.unsplash.com")

# Every example URL of seed 000's document, in its order (repeats included).
EXAMPLES = [
    "https://imfin.it/api/generate?prompt=modern+home&model=seedream-4&ar=16:9&image=https://example.com/a.jpg&image=https://example.com/b.jpg&filename=hero&reroll=true",
    "https://imfin.it/api/generate?prompt=cinematic+sunset+city&model=gemini",
    "https://imfin.it/api/generate?prompt=enhance+lighting&model=seedream-4&image=https://images.unsplash.com/photo-1503023345310-bd7c1de61c7d?w=1024",
    "https://imfin.it/api/generate?prompt=clean+studio+look&model=seedream-4&image=https://images.unsplash.com/photo-1503023345310-bd7c1de61c7d?w=1024&image=https://images.unsplash.com/photo-1494790108377-be9c29b29330?w=1024",
    "https://imfin.it/api/generate?prompt=hero+bottle+shot&model=seedream-4&filename=hero",
    "https://imfin.it/api/generate?filename=hero",
    "https://imfin.it/api/generate?filename=hero&ext=png",
    "https://imfin.it/api/generate?prompt=cinematic+sunset+city&model=gemini&reroll=true",
    "https://imfin.it/api/generate?prompt=minimal+isometric+room&model=gemini",
    "https://imfin.it/api/generate?prompt=macro+photo+dew+drops+on+leaf&model=gemini",
    "https://imfin.it/api/generate?prompt=neon+city&model=ultra&raw=true",
    "https://imfin.it/api/generate?prompt=flat+vector+cat+icon&model=svg",
    "https://imfin.it/api/generate?prompt=clean+product+shot&model=imagen4",
    "https://imfin.it/api/generate?prompt=match+style&model=seedream-4&image=https://images.unsplash.com/photo-1503023345310-bd7c1de61c7d?w=1024",
    "https://imfin.it/api/generate?prompt=fast+sketch+icon&model=nano-banana-2&ar=1:1",
    "https://imfin.it/api/generate?prompt=detailed+poster+with+text&model=nano-banana-pro&ar=3:4",
    "https://imfin.it/api/generate?prompt=poster+with+crisp+small+text&model=gpt-image-2&ar=2:3",
    "https://imfin.it/api/generate?prompt=portrait+photo&model=gemini&ar=9:16",
    "https://imfin.it/api/generate?prompt=square+logo&model=ultra&ar=1:1",
    "https://imfin.it/api/generate?prompt=banner&model=imagen4&ar=21:9",
    "https://imfin.it/api/generate?prompt=classic+photo&model=seedream-4&ar=3:2",
    "https://imfin.it/api/generate?prompt=studio+retouch&model=seedream-4&image=https://example.com/a.jpg",
    "https://imfin.it/api/generate?prompt=studio+retouch&model=seedream-4&image_url=https://example.com/a.jpg",
    "https://imfin.it/api/generate?prompt=studio+retouch&model=seedream-4&init_image=https://example.com/a.jpg",
    "https://imfin.it/api/generate?prompt=studio+retouch&model=seedream-4&images=https://example.com/a.jpg,https://example.com/b.jpg",
    "https://imfin.it/api/generate?prompt=hero+banner&model=gemini&filename=homepage-hero",
    "https://imfin.it/api/generate?filename=homepage-hero",
    "https://imfin.it/api/generate?filename=homepage-hero&ext=png",
    "https://imfin.it/api/generate?prompt=cinematic+sunset+city&model=gemini&reroll=true",
    "https://imfin.it/api/generate?prompt=highly+realistic+portrait&model=ultra&raw=true",
    "https://imfin.it/api/generate?prompt=nano+banana+still+life&model=nano-banana-2&ar=1:1",
    "https://imfin.it/api/generate?prompt=logo+on+product+mockup&model=nano-banana-pro&image=https://images.unsplash.com/photo-1503023345310-bd7c1de61c7d?w=512",
]

# The reference images those URLs name, by path (served whatever the query).
REFERENCE_PATHS = ["/a.jpg", "/b.jpg", "/photo-1503023345310-bd7c1de61c7d", "/photo-1494790108377-be9c29b29330"]

# X-Model: the upstream model id of each seed model (imagen4 and gemini are retired and served
# by nano-banana-2; nano-banana-* may be served by Gemini or by Replicate).
NANO_BANANA_2 = {"gemini-3.1-flash-image", "google/nano-banana-2"}
UPSTREAM_IDS = {
    "seedream-4": {"bytedance/seedream-4"},
    "ultra": {"black-forest-labs/flux-1.1-pro-ultra"},
    "svg": {"recraft-ai/recraft-v3-svg"},
    "gemini": NANO_BANANA_2,
    "imagen4": NANO_BANANA_2,
    "nano-banana-2": NANO_BANANA_2,
    "nano-banana-pro": {"gemini-3-pro-image", "google/nano-banana-pro"},
    "gpt-image-2": {"gpt-image-2"},
}


@pytest.fixture
def refs() -> Iterator[FakeFiles]:
    with FakeFiles() as files:
        for index, path in enumerate(REFERENCE_PATHS):
            files.files[path] = Response(200, solid_png(2000 + index), content_type="image/png")
        yield files


def start(imgproxy: ImgproxyFactory, gemini: FakeGemini, replicate: FakeReplicate, openai: FakeOpenAI, refs: FakeFiles) -> Server:
    return imgproxy.start(
        {
            "IMGPROXY_MASTER_KEY": MASTER_KEY,
            "GEMINI_API_KEY": GEMINI_KEY,
            "GEMINI_BASE_URL": gemini.url,
            "REPLICATE_API_TOKEN": REPLICATE_TOKEN,
            "REPLICATE_BASE_URL": replicate.url,
            "OPENAI_API_KEY": OPENAI_TEST_KEY,
            "OPENAI_BASE_URL": f"{openai.url}/v1",
            "IMGPROXY_FETCH_ALLOW_HOSTS": f"127.0.0.1:{refs.port}",
        }
    )


def localized(example: str, server: Server, refs: FakeFiles) -> str:
    """The example with the seed's host swapped for the server's and the reference hosts for
    the local file server: nothing else changes."""
    url = example.replace(SEED_HOST, server.url)
    for host in REFERENCE_HOSTS:
        url = url.replace(host, refs.url)
    assert url.count(server.url) == 1 and "imfin.it" not in url, url
    return url


def session(secret: str) -> dict[str, str]:
    """The header seed 000's logged-in callers are billed through."""
    return {"x-parse-session-token": secret}


def test_every_example_url_answers_the_image_with_the_documented_headers(
    imgproxy: ImgproxyFactory, gemini: FakeGemini, replicate: FakeReplicate, fake_openai: FakeOpenAI, refs: FakeFiles
) -> None:
    server = start(imgproxy, gemini, replicate, fake_openai, refs)
    key, secret = create_key(server, credits=100_000)
    named: dict[str, bytes] = {}
    balance = 100_000
    for example in EXAMPLES:
        url = localized(example, server, refs)
        status, headers, body = http("GET", url, headers=session(secret), timeout=60)
        assert status == 200, f"{example}: {status} {body[:300]!r}"
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(example).query))
        model = query.get("model")
        content_type = headers.get("content-type", "").split(";")[0]
        if model == "svg":
            assert content_type == "image/svg+xml" and b"<svg" in body, f"{example}: {content_type} {body[:100]!r}"
        else:
            assert content_type in ("image/png", "image/jpeg", "image/webp"), f"{example}: {content_type}"
            image_size(body, {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}[content_type])
        assert headers.get("x-cache-store") == "fs", f"{example}: {headers}"
        cache = headers.get("x-cache-status")
        name = query.get("filename")
        if "prompt" not in query:
            # A recall by name: the stored image, never a generation.
            assert cache == HIT, f"{example}: X-Cache-Status {cache!r}"
            assert body == named[name], f"{example} did not recall the image stored under {name!r}"
        elif query.get("reroll") == "true":
            assert cache == MISS, f"{example}: X-Cache-Status {cache!r}"
        else:
            assert cache in (HIT, MISS), f"{example}: X-Cache-Status {cache!r}"
        if model:
            assert headers.get("x-model") in UPSTREAM_IDS[model], f"{example}: X-Model {headers.get('x-model')!r}"
        if name:
            ext = query.get("ext", "png")
            assert headers.get("content-disposition") == f'inline; filename="{name}.{ext}"', f"{example}: {headers}"
            if "prompt" in query:
                named[name] = body
        else:
            assert "content-disposition" not in headers, f"{example}: {headers}"
        if "prompt" not in query:
            continue  # a recall costs nothing and says no balance
        remaining = int(headers.get("x-credits-remaining", -1))
        assert 0 <= remaining <= balance, f"{example}: the balance went from {balance} to {remaining}"
        if cache == HIT:
            assert remaining == balance, f"{example}: a cache hit was charged"
        balance = remaining
    assert balance < 100_000, "the session token's key paid nothing"
    # Every reference image was fetched from the paths and queries the examples name.
    fetched = set(refs.gets())
    assert fetched == set(REFERENCE_PATHS), fetched
    for fake in (gemini, replicate):
        assert fake.problems == [], f"{type(fake).__name__}: {fake.problems}"


def test_the_session_token_is_a_key_and_a_short_balance_is_402_json(
    imgproxy: ImgproxyFactory, gemini: FakeGemini, replicate: FakeReplicate, fake_openai: FakeOpenAI, refs: FakeFiles
) -> None:
    server = start(imgproxy, gemini, replicate, fake_openai, refs)
    url = localized("https://imfin.it/api/generate?prompt=fast+sketch+icon&model=nano-banana-2&ar=1:1", server, refs)
    # No key at all, or an unknown one: 401 on a server with a master key.
    for headers in ({}, session("ipk_not_a_key")):
        status, answer_headers, body = http("GET", url, headers=headers)
        assert_error_envelope(status, answer_headers, body, expected_status=401)
    _, poor = create_key(server, credits=0)
    status, headers, body = http("GET", url, headers=session(poor))
    error = assert_error_envelope(status, headers, body, expected_status=402, code="insufficient_credits")
    assert "credit" in error["message"], error
    assert gemini.requests == [] and replicate.requests == [], "a refused request reached an upstream"
    # The same key pays the same way in the header or as a bare Authorization value.
    _, secret = create_key(server, credits=1_000)
    status, headers, _ = http("GET", url, headers=session(secret))
    assert status == 200 and headers.get("x-cache-status") == MISS, headers
    charged = 1_000 - int(headers["x-credits-remaining"])
    assert charged > 0
    status, headers, _ = http("GET", url.replace("fast+sketch", "slow+sketch"), headers={"Authorization": secret})
    assert status == 200 and int(headers["x-credits-remaining"]) == 1_000 - 2 * charged, headers


def test_the_path_form_template_answers_a_clear_error(
    imgproxy: ImgproxyFactory, gemini: FakeGemini, replicate: FakeReplicate, fake_openai: FakeOpenAI, refs: FakeFiles
) -> None:
    """The document's ``https://api.imfin.it/prompt/model`` names the model ``model``: an
    unknown model, refused in JSON with its name; a real one is served."""
    server = start(imgproxy, gemini, replicate, fake_openai, refs)
    _, secret = create_key(server, credits=1_000)
    status, headers, body = http("GET", f"{server.url}/prompt/model", headers=session(secret))
    error = assert_error_envelope(status, headers, body, expected_status=404, code="model_not_found")
    assert "`model`" in error["message"], error
    status, headers, body = http("GET", f"{server.url}/prompt/nano-banana-2", headers=session(secret))
    assert status == 200 and headers.get("x-model") in NANO_BANANA_2, (status, headers, body[:200])
