"""Azure OpenAI end to end: the real binary with ``AZURE_OPENAI_ENDPOINT`` pointed at a fake
Azure resource (tests/e2e/fake_upstreams.py ``FakeAzure``, built from providers-2.md §10),
driven by the official OpenAI Python SDK.

Each test checks both sides: what the fake received (the URL form the configured
``api-version`` picks, the ``api-key`` header and never a bearer, the deployment the model is
mapped to, the body or multipart parts) and what the SDK got. The fake validates every request
and notes violations in ``fake.problems``, which every test asserts empty. Metered keys show
the catalog price charged, and a content-filter refusal or an upstream failure refunded.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest
from conftest import OPENAI_TEST_KEY, ImgproxyFactory, Server
from fake_openai import FakeOpenAI, encode_png
from fake_upstreams import AZURE_FIRST_IMAGE_API_VERSION, FakeAzure, noise_png
from helpers import client
from test_credits import MASTER_KEY, balance, create_key

AZURE_KEY = "azure-e2e-key-0123456789abcdef"
DEPLOYMENT = "images-prod"
# gpt-image-2 at quality=low, per image (imgproxy-core/catalog/azure.toml, as openai.toml).
GPT_IMAGE_2_LOW = 6

IMAGE = noise_png(32, seed=7)
MASK = encode_png(32, 32, lambda x, y: (0, 0, 0, 0) if x < 16 else (255, 255, 255, 255), alpha=True)


@pytest.fixture
def azure() -> Iterator[FakeAzure]:
    """A resource with gpt-image-2 deployed as ``images-prod`` and the other models under
    their own ids."""
    with FakeAzure(AZURE_KEY, {DEPLOYMENT, "gpt-image-1.5", "gpt-image-1-mini"}) as fake:
        yield fake


def start(imgproxy: ImgproxyFactory, azure: FakeAzure, endpoint_path: str = "", **env: str) -> Server:
    """A server with Azure enabled at the fake, gpt-image-2 mapped to its deployment, a master
    key for metered keys, and ``env`` added."""
    return imgproxy.start(
        {
            "AZURE_OPENAI_API_KEY": AZURE_KEY,
            "AZURE_OPENAI_ENDPOINT": f"{azure.url}{endpoint_path}",
            "AZURE_OPENAI_DEPLOYMENTS": f"gpt-image-2={DEPLOYMENT}",
            "IMGPROXY_MASTER_KEY": MASTER_KEY,
            **env,
        }
    )


def assert_clean(azure: FakeAzure, server: Server, text: str = "") -> None:
    """No wire-format problem at the fake, and the key in neither ``text`` nor the log."""
    assert azure.problems == [], f"requests that break Azure's wire format: {azure.problems}; {azure.summary()}"
    assert AZURE_KEY not in text, "the Azure key leaked into an answer"
    assert AZURE_KEY not in server.log(), "the Azure key was written to the log"


def decoded(response: openai.types.ImagesResponse) -> list[bytes]:
    assert response.data, response
    return [base64.b64decode(image.b64_json or "", validate=True) for image in response.data]


def test_the_deployment_form_by_default_maps_the_model_and_charges_the_catalog_price(
    imgproxy: ImgproxyFactory, azure: FakeAzure
) -> None:
    server = start(imgproxy, azure)
    _, secret = create_key(server, credits=100)
    raw = client(server.url, api_key=secret).images.with_raw_response.generate(
        model="gpt-image-2", prompt="a lighthouse at dusk", n=2, quality="low"
    )
    assert raw.status_code == 200, raw.text[:500]
    (call,) = azure.image_calls()
    assert call.path == f"/openai/deployments/{DEPLOYMENT}/images/generations"
    assert call.query == {"api-version": [AZURE_FIRST_IMAGE_API_VERSION]}
    assert call.headers.get("api-key") == AZURE_KEY and "authorization" not in call.headers
    assert call.json == {
        "model": DEPLOYMENT,
        "prompt": "a lighthouse at dusk",
        "n": 2,
        "quality": "low",
        "output_format": "png",
    }
    assert sorted(decoded(raw.parse())) == sorted(azure.images), "the SDK did not get Azure's images"
    assert json.loads(raw.text)["credits_used"] == 2 * GPT_IMAGE_2_LOW
    assert balance(server, secret) == 100 - 2 * GPT_IMAGE_2_LOW
    assert_clean(azure, server, raw.text)


def test_the_v1_api_names_the_deployment_in_the_body(imgproxy: ImgproxyFactory, azure: FakeAzure) -> None:
    # The endpoint as the v1 API's base URL is often written: the adapter drops `/openai/v1`.
    server = start(imgproxy, azure, "/openai/v1/", AZURE_OPENAI_API_VERSION="v1")
    response = client(server.url, api_key=MASTER_KEY).images.generate(model="gpt-image-1.5", prompt="a red kite", size="1536x1024")
    (call,) = azure.image_calls()
    assert (call.path, call.query) == ("/openai/v1/images/generations", {})
    assert call.json["model"] == "gpt-image-1.5", "an unmapped model is deployed under its own id"
    assert call.json["size"] == "1536x1024"
    assert decoded(response) == azure.images
    assert_clean(azure, server)


def test_a_mask_edit_goes_as_multipart_to_the_deployment(imgproxy: ImgproxyFactory, azure: FakeAzure) -> None:
    server = start(imgproxy, azure)
    response = client(server.url, api_key=MASTER_KEY).images.edit(
        model="gpt-image-2",
        image=("room.png", IMAGE, "image/png"),
        mask=("mask.png", MASK, "image/png"),
        prompt="a window in the left wall",
    )
    (call,) = azure.image_calls()
    assert call.path == f"/openai/deployments/{DEPLOYMENT}/images/edits"
    assert call.query == {"api-version": [AZURE_FIRST_IMAGE_API_VERSION]}
    assert call.headers.get("api-key") == AZURE_KEY and "authorization" not in call.headers
    assert call.form["model"] == DEPLOYMENT and call.form["prompt"] == "a window in the left wall"
    assert [part.data for part in call.parts_named("image[]")] == [IMAGE]
    assert call.part("mask").data == MASK, "the mask bytes were not passed on intact"
    assert [part.name for part in call.files] == ["image[]", "mask"], call.part_summary()
    assert decoded(response) == azure.images
    assert_clean(azure, server)


@pytest.mark.parametrize(
    ("keyword", "says"),
    [
        # The logged real refusal: 400 `content_policy_violation`, the rewritten prompt kept.
        ("MODERATE", "revised prompt: a quiet meadow"),
        # The documented `contentFilter` answer for a filtered image, sent with status 200.
        ("FILTEROUT", "Generated image was filtered"),
    ],
)
def test_a_content_filter_refusal_is_moderation_blocked_and_refunded(
    imgproxy: ImgproxyFactory, azure: FakeAzure, keyword: str, says: str
) -> None:
    server = start(imgproxy, azure)
    _, secret = create_key(server, credits=50)
    with pytest.raises(openai.BadRequestError) as caught:
        client(server.url, api_key=secret).images.generate(model="gpt-image-2", prompt=f"{keyword} a fox", quality="low")
    error = caught.value
    assert error.code == "moderation_blocked", error.body
    assert isinstance(error.body, dict) and says in error.body["message"], error.body
    assert len(azure.image_calls()) == 1
    assert balance(server, secret) == 50, "a refused generation must be refunded in full"
    assert_clean(azure, server, error.response.text)


@pytest.mark.parametrize(
    ("keyword", "status", "error_class"),
    [("FAIL500", 502, openai.InternalServerError), ("RATELIMIT", 429, openai.RateLimitError)],
)
def test_an_upstream_failure_is_refunded_and_a_rate_limit_keeps_its_wait(
    imgproxy: ImgproxyFactory, azure: FakeAzure, keyword: str, status: int, error_class: type[openai.APIStatusError]
) -> None:
    # One attempt: Azure's 2.5 s wait would otherwise be taken and the call tried again.
    server = start(imgproxy, azure, IMGPROXY_FAILOVER_MAX_RETRY_AFTER_SECS="0")
    _, secret = create_key(server, credits=50)
    with pytest.raises(error_class) as caught:
        client(server.url, api_key=secret).images.generate(model="gpt-image-2", prompt=f"{keyword} a fox", quality="low")
    assert caught.value.status_code == status
    if status == 429:
        assert caught.value.response.headers.get("retry-after") == "3", "Azure's wait (2.5 s) is passed on, rounded up"
    assert balance(server, secret) == 50, "a failed generation must be refunded in full"
    assert_clean(azure, server, caught.value.response.text)


def test_one_model_id_two_providers_openai_first_unless_routing_prefers_azure(
    imgproxy: ImgproxyFactory, azure: FakeAzure, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    both: dict[str, Any] = {"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": f"{fake_openai.url}/v1"}
    default = start(imgproxy, azure, **both)
    client(default.url, api_key=MASTER_KEY).images.generate(model="gpt-image-2", prompt="a heron")
    assert len(fake_openai.image_requests()) == 1 and azure.image_calls() == [], "OpenAI's variant comes first"
    listed = [m for m in client(default.url, api_key=MASTER_KEY).models.list() if m.id == "gpt-image-2"]
    assert len(listed) == 1, f"one model id, listed once: {listed}"

    config = tmp_path / "imgproxy.toml"
    config.write_text('[routing]\n"gpt-image-2" = ["azure", "openai"]\n')
    routed = imgproxy.start(
        {
            **both,
            "AZURE_OPENAI_API_KEY": AZURE_KEY,
            "AZURE_OPENAI_ENDPOINT": azure.url,
            "AZURE_OPENAI_DEPLOYMENTS": f"gpt-image-2={DEPLOYMENT}",
            "IMGPROXY_MASTER_KEY": MASTER_KEY,
        },
        args=["--config", str(config)],
    )
    client(routed.url, api_key=MASTER_KEY).images.generate(model="gpt-image-2", prompt="a heron")
    assert len(azure.image_calls()) == 1 and len(fake_openai.image_requests()) == 1, "[routing] prefers Azure"
    assert_clean(azure, routed)
