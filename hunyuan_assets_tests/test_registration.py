"""Registration: validated bytes are what gets uploaded (converted to PNG when the API cannot
read them), presigned S3 URLs are short-lived and say when they expire, and one bad image never
stops the others nor has its bytes quoted. Against the emulator and moto's S3, on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import socket
import traceback
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from PIL import Image

from hunyuan_assets.client import AsyncHunyuan3DClient, ClientSettings, HttpRetryPolicy
from hunyuan_assets.core import sources
from hunyuan_assets.core.registration import (
    DEFAULT_PRESIGN_EXPIRY,
    UPLOAD_URL_LIFETIME,
    Registration,
    presigned_url,
    register_image,
    register_images,
)
from hunyuan_assets.core.sources import (
    SAMPLES_DIR,
    FolderImageSource,
    ImageRef,
    ImageSource,
    S3ImageSource,
)

MARKER = b"QZXJ"  # appears in no message of ours: any echo of a file's bytes shows
SIX_DAYS = 6 * 24 * 3600  # what the integration layer configures on its S3 source


def _settings(emulator) -> ClientSettings:
    retry = HttpRetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, jitter=0.0)
    return ClientSettings(api_key="test-key", base_url=emulator.base_url, retry=retry)


def _register(emulator, source: ImageSource, refs: Sequence[ImageRef], **kw) -> list[Registration]:
    async def run() -> list[Registration]:
        async with AsyncHunyuan3DClient(_settings(emulator)) as client:
            return await register_images(source, refs, client, **kw)

    return asyncio.run(run())


def _by_path(registrations: list[Registration]) -> dict[str, Registration]:
    return {r.ref.relative_path: r for r in registrations}


def _uploaded(url: str) -> tuple[str, bytes]:
    """The file name and bytes the emulator received for an upload URL."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return urllib.parse.unquote(url.rsplit("/", 1)[1]), response.content


def _encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _converted_samples() -> dict[str, bytes]:
    red, blue = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (40, 30), "blue")
    return {
        "scan.tiff": _encoded(red, "TIFF", compression="tiff_lzw"),
        "anim.GIF": _encoded(red, "GIF", save_all=True, append_images=[blue]),
        "old.bmp": _encoded(red, "BMP"),
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _assert_no_echo(*texts: object) -> None:
    forms = {MARKER.decode(), MARKER.hex(), repr(MARKER)[2:-1]}
    for text in texts:
        assert not any(form in str(text) for form in forms), text


# ------------------------------------------------------------------------ local uploads


def test_a_local_image_is_uploaded_as_it_is(emulator, images_dir: Path) -> None:
    source = FolderImageSource(images_dir)
    before = datetime.now(UTC)
    registrations = _register(emulator, source, source.list_images())
    assert all(r.ok for r in registrations), [r.error for r in registrations]
    for reg in registrations:
        data = (images_dir / reg.ref.relative_path).read_bytes()
        assert reg.info is not None and reg.info.sha256 == _sha256(data)
        assert (reg.url_kind, reg.converted) == ("upload", False)
        assert reg.image_url is not None
        assert _uploaded(reg.image_url) == (reg.ref.relative_path, data)  # same name, same bytes
        assert reg.url_expires_at is not None
        assert before + UPLOAD_URL_LIFETIME <= reg.url_expires_at
        assert reg.url_expires_at <= datetime.now(UTC) + UPLOAD_URL_LIFETIME
    assert emulator.stats()["uploads"] == 3


def test_what_is_uploaded_is_the_bytes_that_were_validated(emulator, tmp_path: Path) -> None:
    """A file rewritten after it was read is not what goes out: the upload is a private copy."""
    original = (SAMPLES_DIR / "mug.png").read_bytes()
    path = tmp_path / "mug.png"
    path.write_bytes(original)

    class RewrittenAfterReading(FolderImageSource):
        def read_bytes(self, ref: ImageRef) -> bytes:
            data = super().read_bytes(ref)
            path.write_bytes((SAMPLES_DIR / "duck.png").read_bytes())
            return data

    source = RewrittenAfterReading(tmp_path)
    (reg,) = _register(emulator, source, source.list_images())
    assert reg.ok and reg.info is not None and reg.image_url is not None
    assert _uploaded(reg.image_url)[1] == original
    assert reg.info.sha256 == _sha256(original)


def test_a_link_swapped_out_of_the_folder_after_listing_is_not_uploaded(
    emulator, tmp_path: Path
) -> None:
    root = tmp_path / "images"
    root.mkdir()
    shutil.copy(SAMPLES_DIR / "mug.png", root / "mug.png")
    secret = tmp_path / "secret.png"
    secret.write_bytes((SAMPLES_DIR / "duck.png").read_bytes())  # a valid image, outside
    source = FolderImageSource(root)
    refs = source.list_images()
    (root / "mug.png").unlink()
    (root / "mug.png").symlink_to(secret)
    (reg,) = _register(emulator, source, refs)
    assert reg.error == "mug.png: symbolic link to a file outside the images folder; not read"
    assert not reg.transient and reg.info is None and reg.content_sha256 is None  # not read
    assert emulator.stats()["uploads"] == 0


# -------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_other_formats_are_converted_and_uploaded_as_png(
    where: str, emulator, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    stored = _converted_samples()
    source: ImageSource
    if where == "folder":
        for name, data in stored.items():
            (tmp_path / name).write_bytes(data)
        source = FolderImageSource(tmp_path)
    else:
        s3_client = request.getfixturevalue("s3_client")
        bucket = request.getfixturevalue("s3_bucket")
        for name, data in stored.items():
            s3_client.put_object(Bucket=bucket, Key=f"in/{name}", Body=data)
        source = S3ImageSource(s3_client, bucket, "in", url_expiry=SIX_DAYS)
    refs = source.list_images()
    assert sorted(r.partition_key for r in refs) == sorted(stored)  # keys keep the suffix
    registrations = _by_path(_register(emulator, source, refs))
    for name, data in stored.items():
        reg = registrations[name]
        assert reg.ok, reg.error
        assert reg.info is not None and reg.image_url is not None
        assert reg.info.sha256 == _sha256(data)  # identity: the file as stored
        assert reg.info.format == {"tiff": "TIFF", "GIF": "GIF", "bmp": "BMP"}[name.split(".")[1]]
        assert (reg.url_kind, reg.converted) == ("upload", True)  # never a presigned TIFF
        filename, uploaded = _uploaded(reg.image_url)
        assert filename == name.rsplit(".", 1)[0] + ".png"
        with Image.open(io.BytesIO(uploaded)) as png:
            assert (png.format, png.size) == ("PNG", (40, 30))
            assert png.convert("RGB").getpixel((0, 0)) == (255, 0, 0)  # the first frame
    assert emulator.stats()["uploads"] == 3


# ------------------------------------------------------------------------- presigning


def _expires_param(url: str) -> int:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    if "X-Amz-Expires" in query:  # SigV4
        return int(query["X-Amz-Expires"][0])
    return int(query["Expires"][0]) - int(datetime.now(UTC).timestamp())  # SigV2: a deadline


def test_s3_urls_are_presigned_for_an_hour_and_say_when_they_expire(
    emulator, s3_client, s3_bucket: str
) -> None:
    data = (SAMPLES_DIR / "mug.png").read_bytes()
    s3_client.put_object(Bucket=s3_bucket, Key="in/shop front/mug +1 #a?.png", Body=data)
    source = S3ImageSource(s3_client, s3_bucket, "in", url_expiry=SIX_DAYS)
    refs = source.list_images()

    before = datetime.now(UTC)
    (reg,) = _register(emulator, source, refs)
    assert reg.ok and reg.url_kind == "presigned" and reg.image_url and reg.url_expires_at
    assert DEFAULT_PRESIGN_EXPIRY == timedelta(hours=1)
    assert abs(_expires_param(reg.image_url) - 3600) <= 2  # not the source's six days
    assert before + DEFAULT_PRESIGN_EXPIRY <= reg.url_expires_at
    assert reg.url_expires_at <= datetime.now(UTC) + DEFAULT_PRESIGN_EXPIRY
    assert httpx.get(reg.image_url, timeout=10).content == data

    (short,) = _register(emulator, source, refs, presign_expiry=timedelta(minutes=5))
    assert short.image_url and abs(_expires_param(short.image_url) - 300) <= 2
    assert emulator.stats()["uploads"] == 0  # presigned: the API fetches from S3

    # Signing again right before a submit: no read, no upload, a fresh deadline.
    again = presigned_url(source, refs[0], timedelta(minutes=10))
    assert again is not None and again.url != reg.image_url
    assert abs(_expires_param(again.url) - 600) <= 2
    assert again.expires_at > short.url_expires_at  # type: ignore[operator]
    assert httpx.get(again.url, timeout=10).content == data
    assert presigned_url(FolderImageSource(SAMPLES_DIR), refs[0]) is None


@pytest.mark.parametrize("expiry", [timedelta(0), timedelta(days=8)])
def test_a_bad_presign_expiry_fails_the_call(emulator, images_dir: Path, expiry) -> None:
    source = FolderImageSource(images_dir)
    with pytest.raises(ValueError, match="presign_expiry must be between 1 s and 7 days"):
        _register(emulator, source, source.list_images(), presign_expiry=expiry)
    assert emulator.stats()["uploads"] == 0


# ------------------------------------------------------------ bad input fails alone


def _png_of_size(width: int, height: int) -> bytes:
    from hunyuan_assets_tests.test_sources import _png_of_size as make

    return make(width, height, complete=False)


def test_every_bad_image_fails_alone_with_its_reason_and_no_bytes_quoted(
    emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = (SAMPLES_DIR / "mug.png").read_bytes()
    files = {
        "good.png": good,
        "empty.png": b"",
        "notes.png": b"api_key=" + MARKER * 4,
        "page.jpg": b"<html>" + MARKER + b"</html>",
        "half.png": good[: len(good) // 2],
        "huge.png": _png_of_size(12_000, 12_000),
        "big.bmp": b"BM" + MARKER * 6000,  # over the (patched) size limit
        "unreadable.png": good,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    source = FolderImageSource(tmp_path)
    refs = source.list_images()
    (tmp_path / "unreadable.png").unlink()  # gone between listing and reading
    monkeypatch.setattr(sources, "MAX_IMAGE_BYTES", 20_000)  # the mug is 15 kB
    registrations = _by_path(_register(emulator, source, refs))

    assert registrations.pop("good.png").ok
    expected = {
        "empty.png": "empty.png: empty data: 0 bytes is not an image",
        "notes.png": "notes.png: not a recognised image: 24 bytes of text",
        "page.jpg": "page.jpg: not a recognised image: 17 bytes of HTML or XML text",
        "half.png": "half.png: truncated PNG image: the data ends early",
        "huge.png": "huge.png: image is 12000x12000 (144.0 megapixels), over the limit",
        "big.bmp": "big.bmp: 24,002 bytes is over the 20,000 bytes upload limit; not read",
        "unreadable.png": "unreadable.png could not be read: [Errno 2] No such file",
    }
    for name, reg in registrations.items():
        assert reg.error is not None and reg.error.startswith(expected[name]), reg.error
        assert not reg.transient
        _assert_no_echo(reg.error, reg)
    assert registrations["notes.png"].content_sha256 == _sha256(files["notes.png"])
    assert registrations["big.bmp"].content_sha256 is None  # refused before reading
    assert emulator.stats()["uploads"] == 1


def test_a_missing_s3_object_and_an_unreachable_s3_fail_alone(
    emulator, s3_client, s3_bucket: str, s3_env
) -> None:
    import boto3
    from botocore.config import Config

    data = (SAMPLES_DIR / "mug.png").read_bytes()
    for name in ("a.png", "gone.png"):
        s3_client.put_object(Bucket=s3_bucket, Key=f"in/{name}", Body=data)
    source = S3ImageSource(s3_client, s3_bucket, "in")
    refs = source.list_images()
    s3_client.delete_object(Bucket=s3_bucket, Key="in/gone.png")
    registrations = _by_path(_register(emulator, source, refs))
    assert registrations["a.png"].ok
    gone = registrations["gone.png"]
    assert gone.error == (
        f"gone.png could not be read: s3://{s3_bucket}/in/gone.png does not exist (any more)"
    )
    assert not gone.transient

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    (down,) = _register(emulator, S3ImageSource(dead, s3_bucket, "in"), refs[:1])
    assert down.error is not None and "EndpointConnectionError" in down.error
    assert down.transient  # worth retrying


def test_a_failed_upload_fails_alone_and_is_transient(emulator, images_dir: Path) -> None:
    emulator.configure(rules=[{"endpoint": "upload", "kind": "503", "count": -1, "match": "vase"}])
    source = FolderImageSource(images_dir)
    registrations = _by_path(_register(emulator, source, source.list_images()))
    vase = registrations.pop("vase.jpg")
    assert vase.error is not None and vase.error.startswith("upload failed:")
    assert vase.transient and vase.info is not None and vase.content_sha256 == vase.info.sha256
    assert all(r.ok for r in registrations.values())


def test_register_image_alone_never_raises_for_bad_input(emulator, tmp_path: Path) -> None:
    (tmp_path / "bad.gif").write_bytes(b"GIF89a" + MARKER * 10)

    async def run() -> Registration:
        async with AsyncHunyuan3DClient(_settings(emulator)) as client:
            source = FolderImageSource(tmp_path)
            (ref,) = source.list_images()
            return await register_image(source, ref, client)

    reg = asyncio.run(run())
    assert reg.error == "bad.gif: corrupt or truncated GIF header (46 bytes)"
    _assert_no_echo("".join(traceback.format_stack()), reg)
