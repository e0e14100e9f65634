"""OpenAI's Files API on imgproxy (``/v1/files``) through the official SDK, and file ids as
reference images in ``POST /v1/images/generations`` and ``GET /api/generate``."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import ImgproxyFactory, Server
from fake_openai import solid_png
from fake_upstreams import data_url
from helpers import assert_error_envelope, client, http
from imaging import PNG_SIGNATURE, parse_png

MASTER_KEY = "mk-files-e2e-0123456789"


@pytest.fixture(params=["fs", "s3"])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The server environment of each image store: the data dir (default) or S3 on moto."""
    if request.param == "fs":
        return {}
    return request.getfixturevalue("s3_bucket").env


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def create_key(server: Server) -> tuple[str, str]:
    status, _, raw = http(
        "POST", f"{server.url}/v1/admin/keys", json_body={"name": "files-e2e", "credits": 1000}, headers=bearer(MASTER_KEY)
    )
    assert status == 201, raw[:500]
    created = json.loads(raw)
    return created["key"]["id"], created["secret"]


def generate(sdk: openai.OpenAI, **extra_body: Any) -> tuple[str | None, bytes]:
    """One placeholder image (64x64, seed 1, ``extra_body`` added): (X-Cache-Status, PNG)."""
    raw = sdk.images.with_raw_response.generate(
        model="placeholder", prompt="mix in the file", size="64x64", extra_body={"seed": 1, **extra_body}
    )
    assert raw.status_code == 200, raw.text[:500]
    png = base64.b64decode(raw.parse().data[0].b64_json)
    parse_png(png)
    return raw.headers.get("x-cache-status"), png


def url_api(server: Server, secret: str | None = None, **params: Any) -> tuple[int, dict[str, str], bytes]:
    query = urllib.parse.urlencode({"prompt": "mix in the file", "model": "placeholder", "size": "64x64", "seed": "1", **params})
    return http("GET", f"{server.url}/api/generate?{query}", headers=bearer(secret) if secret else None)


def test_sdk_files_create_retrieve_content_list_delete(imgproxy: ImgproxyFactory, tmp_path: Path, store_env: dict[str, str]) -> None:
    server = imgproxy.start(store_env)
    sdk = client(server.url)
    data = solid_png(5, 32)
    path = tmp_path / "reference.png"
    path.write_bytes(data)

    before = int(time.time())
    with open(path, "rb") as file:
        created = sdk.files.create(file=file, purpose="vision")
    assert created.id.startswith("file-"), created
    assert created.object == "file" and created.bytes == len(data), created
    assert created.filename == "reference.png" and created.purpose == "vision", created
    assert created.status == "processed", created
    assert before - 5 <= created.created_at <= time.time() + 5, created

    retrieved = sdk.files.retrieve(created.id)
    assert (retrieved.id, retrieved.bytes, retrieved.filename, retrieved.purpose, retrieved.created_at) == (
        created.id,
        created.bytes,
        created.filename,
        created.purpose,
        created.created_at,
    ), retrieved
    assert sdk.files.content(created.id).content == data, "GET /v1/files/{id}/content is not the uploaded bytes"

    # A JPEG, as a (name, bytes, type) tuple, for another purpose.
    jpeg = base64.b64decode(
        sdk.images.generate(model="placeholder", prompt="a jpeg", size="32x32", output_format="jpeg").data[0].b64_json
    )
    second = sdk.files.create(file=("photo.jpg", jpeg, "image/jpeg"), purpose="user_data")
    assert second.id != created.id and second.purpose == "user_data" and second.bytes == len(jpeg), second

    listed = sdk.files.list()
    ids = [f.id for f in listed.data]
    assert created.id in ids and second.id in ids, ids
    status, _, raw = http("GET", f"{server.url}/v1/files")
    assert status == 200 and json.loads(raw)["object"] == "list", raw[:300]

    deleted = sdk.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted is True and deleted.object == "file", deleted
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.files.delete(created.id)
    assert [f.id for f in sdk.files.list().data] == [second.id]
    status, headers, raw = http("GET", f"{server.url}/v1/files/file-doesnotexist")
    assert_error_envelope(status, headers, raw, expected_status=404)

    # Files survive a restart.
    server = imgproxy.restart(server)
    assert client(server.url).files.content(second.id).content == jpeg


def _two_files(server: Server) -> tuple[Any, Any]:
    sdk = client(server.url)
    vision = sdk.files.create(file=("v.png", solid_png(31, 16), "image/png"), purpose="vision")
    user = sdk.files.create(file=("u.png", solid_png(32, 16), "image/png"), purpose="user_data")
    return vision, user


def test_files_list_filters_by_purpose(server: Server) -> None:
    """OpenAI's list parameter ``purpose`` is honoured, or refused naming it: never silently
    ignored."""
    sdk = client(server.url)
    vision, _ = _two_files(server)
    try:
        listed = sdk.files.list(purpose="vision")
    except openai.BadRequestError as error:
        assert error.body.get("param") == "purpose", error.body
    else:
        assert [f.id for f in listed.data] == [vision.id], (
            f"GET /v1/files?purpose=vision listed {[(f.id, f.purpose) for f in listed.data]}"
        )


def test_files_list_honours_limit(server: Server) -> None:
    """OpenAI's list parameter ``limit`` pages (``has_more``), or is refused naming it."""
    sdk = client(server.url)
    vision, user = _two_files(server)
    try:
        page = sdk.files.list(limit=1)
    except openai.BadRequestError as error:
        assert error.body.get("param") == "limit", error.body
    else:
        assert len(page.data) == 1 and page.has_more is True, (
            f"GET /v1/files?limit=1 gave {len(page.data)} files, has_more={page.has_more}"
        )
        assert {f.id for f in sdk.files.list(limit=1)}  # iterating a page follows `after` == {vision.id, user.id}


def test_file_id_is_a_reference_image(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start()
    sdk = client(server.url)
    data_a, data_b = solid_png(11, 24), solid_png(12, 24)
    file_a = sdk.files.create(file=("a.png", data_a, "image/png"), purpose="vision").id
    file_b = sdk.files.create(file=("b.png", data_b, "image/png"), purpose="vision").id

    status, plain = generate(sdk)
    assert status == "MISS-GENERATED", status
    status, with_a = generate(sdk, images=[file_a])
    assert status == "MISS-GENERATED" and with_a != plain, "the file was not used as a reference"
    assert generate(sdk, images=[file_a]) == ("HIT", with_a)
    assert generate(sdk, images=[{"file_id": file_a}]) == ("HIT", with_a), '{"file_id": ...} is the same reference'
    # the cache key holds the reference's content hash: the same bytes inline are the same entry
    assert generate(sdk, images=[data_url(data_a)]) == ("HIT", with_a)
    status, with_b = generate(sdk, images=[file_b])
    assert status == "MISS-GENERATED" and with_b not in (plain, with_a)

    # The URL API takes file ids too; another reference is another entry.
    status, headers, body = url_api(server, image=file_a)
    assert status == 200 and body[:8] == PNG_SIGNATURE, f"{status} {body[:300]!r}"
    assert body == with_a, "the same seeded request with the same reference drew another image"
    status, headers, body_b = url_api(server, image=file_b, reroll="true")
    assert status == 200 and headers.get("x-cache-status") == "MISS-GENERATED" and body_b == with_b, (status, headers)
    status, headers, again = url_api(server, image=file_a)
    assert status == 200 and headers.get("x-cache-status") == "HIT" and again == with_a, (status, headers)

    for missing in ("file-doesnotexist",):
        status, headers, body = url_api(server, image=missing)
        error = assert_error_envelope(status, headers, body, expected_status=status)
        assert status == 404 or (status == 400 and error["param"] == "image"), f"{status} {error}"
    sdk.files.delete(file_b)
    with pytest.raises((openai.NotFoundError, openai.BadRequestError)):
        generate(sdk, images=[file_b])


def test_non_image_upload_is_400_naming_file(server: Server) -> None:
    sdk = client(server.url)
    for name, content, mime in [
        ("notes.txt", b"hello, not an image\n", "text/plain"),
        ("fake.png", b"<html>not a png</html>", "image/png"),
    ]:
        with pytest.raises(openai.BadRequestError) as raised:
            sdk.files.create(file=(name, content, mime), purpose="user_data")
        body = raised.value.body
        assert isinstance(body, dict) and body.get("param") == "file", f"{name}: {body}"
    assert sdk.files.list().data == []

    boundary = "----e2e-no-file"
    form = f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nvision\r\n--{boundary}--\r\n'.encode()
    status, headers, raw = http(
        "POST", f"{server.url}/v1/files", body=form, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert_error_envelope(status, headers, raw, expected_status=400, param="file")


def test_another_key_cannot_see_or_use_a_file(imgproxy: ImgproxyFactory) -> None:
    server = imgproxy.start({"IMGPROXY_MASTER_KEY": MASTER_KEY})
    _, secret_a = create_key(server)
    _, secret_b = create_key(server)
    sdk_a, sdk_b = client(server.url, api_key=secret_a), client(server.url, api_key=secret_b)
    data = solid_png(21, 24)
    file_id = sdk_a.files.create(file=("mine.png", data, "image/png"), purpose="vision").id

    with pytest.raises(openai.NotFoundError):
        sdk_b.files.retrieve(file_id)
    with pytest.raises(openai.NotFoundError):
        sdk_b.files.content(file_id)
    with pytest.raises(openai.NotFoundError):
        sdk_b.files.delete(file_id)
    assert file_id not in [f.id for f in sdk_b.files.list().data]
    with pytest.raises((openai.NotFoundError, openai.BadRequestError)) as raised:
        generate(sdk_b, images=[file_id])
    if isinstance(raised.value, openai.BadRequestError):
        assert raised.value.body.get("param") == "image", raised.value.body
    status, headers, body = url_api(server, secret_b, image=file_id)
    error = assert_error_envelope(status, headers, body, expected_status=status)
    assert status == 404 or (status == 400 and error["param"] == "image"), f"{status} {error}"

    # still there for its owner
    assert sdk_a.files.content(file_id).content == data
    assert file_id in [f.id for f in sdk_a.files.list().data]
    status, _ = generate(sdk_a, images=[file_id])
    assert status == "MISS-GENERATED"
    status, headers, body = http("GET", f"{server.url}/v1/files", headers={})
    assert_error_envelope(status, headers, body, expected_status=401)
