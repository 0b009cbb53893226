"""Image sources: partition keys, folder and S3 listing, presigned URLs, image validation."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import struct
import subprocess
import sys
import time
import traceback
import tracemalloc
import urllib.parse
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, DynamicPartitionsDefinition, StaticPartitionsDefinition
from PIL import Image

from hunyuan_assets.core import sources
from hunyuan_assets.core.sources import (
    IMAGE_SUFFIXES,
    MAX_KEY_LENGTH,
    SAMPLES_DIR,
    FolderImageSource,
    ImageInfo,
    ImageReadError,
    ImageTooLargeError,
    InvalidImageError,
    PartitionKeyCollisionError,
    S3ImageSource,
    describe_image,
    is_image_path,
    open_image_source,
    partition_key_for,
    partition_keys_for,
    prepare_upload,
)
from hunyuan_assets.integration.compat import unsafe_partition_key_parts

# What every key must look like: the strict Dagster tag value / Kubernetes label alphabet.
KEY_SHAPE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
LOSSY_SHAPE = re.compile(r"(?P<body>.+)--(?P<hash>[0-9a-f]{12})")

# Paths that are already safe keep their name ('/' becomes '__').
LOSSLESS = [
    ("mug.png", "mug.png"),
    ("A.png", "A.png"),
    ("a.png", "a.png"),
    ("IMG_0001.JPG", "IMG_0001.JPG"),
    ("a/b.png", "a__b.png"),
    ("2024-06/batch.1/red-mug_v2.webp", "2024-06__batch.1__red-mug_v2.webp"),
    ("x" * (MAX_KEY_LENGTH - 4) + ".png", "x" * (MAX_KEY_LENGTH - 4) + ".png"),
]

# Paths that must be changed: (path, readable part of the key before '--<hash>').
LOSSY = [
    ("red mug.png", "red-mug.png"),
    ("café.png", "cafe.png"),
    ("cafe\u0301.png", "cafe.png"),  # the same name, decomposed (macOS)
    ("Straße/Œuvre.png", "Strasse__OEuvre.png"),
    ("Привет мир.jpg", "Privet-mir.jpg"),
    ("Ωμέγα.png", "Omega.png"),
    ("ＦＵＬＬ　ｗｉｄｔｈ.png", "FULL-width.png"),
    ("ﬁle.png", "file.png"),
    ("ファイル.png", "image.png"),
    ("🦆.png", "image.png"),
    ("🦆 duck 🦆.png", "duck.png"),
    ("a__b.png", "a_b.png"),
    ("a--b.png", "a-b.png"),
    ("a...b.png", "a.b.png"),
    ("a\u2026b.png", "a.b.png"),  # one-character ellipsis
    ("x|y,z[1].png", "x-y-z-1.png"),
    ("tab\there\nnewline.png", "tab-here-newline.png"),
    ("nul\0bell\a.png", "nul-bell.png"),
    ("a／b.png", "a-b.png"),  # fullwidth solidus is part of the name, not a folder
    ("back\\slash.png", "back-slash.png"),
    ("-lead.png", "lead.png"),
    ("_under.png", "under.png"),
    ("trail-/x.png", "trail__x.png"),
    ("..//x.png", "x.png"),
    ("/abs/x.png", "abs__x.png"),
    ("100% <fun> & 'quotes' \"too\"?.png", "100-fun-quotes-too.png"),
    ("bad\udcffbytes.png", "bad-bytes.png"),  # undecodable POSIX name via os.fsdecode
    ("x" * (MAX_KEY_LENGTH - 3) + ".png", None),  # one character too long
]


@pytest.mark.parametrize(("path", "key"), LOSSLESS)
def test_safe_paths_keep_their_name(path: str, key: str) -> None:
    assert partition_key_for(path) == key


@pytest.mark.parametrize(("path", "body"), LOSSY)
def test_unsafe_paths_get_a_readable_key_and_a_hash(path: str, body: str | None) -> None:
    key = partition_key_for(path)
    match = LOSSY_SHAPE.fullmatch(key)
    assert match, key
    if body is not None:
        assert match["body"] == body
    expected = hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    assert match["hash"] == expected


def test_keys_are_pinned() -> None:
    """The rules are frozen: a changed key orphans a partition's history."""
    assert partition_key_for("red mug.png") == "red-mug.png--8d430527a40b"
    assert partition_key_for("café.png") == "cafe.png--36d93486fa98"
    assert partition_key_for("🦆.png") == "image.png--ddbd04de809d"
    assert (
        partition_key_for("dir/" + "y" * 80 + "/photo-final.jpeg")
        == "dir__yyyyyyyyyyy-yyyyyyyyyyyyyy__photo-final.jpeg--7927af20e7b8"
    )


def test_long_paths_keep_both_ends_and_fit() -> None:
    path = "catalogue/2024/summer/" + "ceramics-and-glass/" * 6 + "red-mug-front.png"
    key = partition_key_for(path)
    assert MAX_KEY_LENGTH - 2 <= len(key) <= MAX_KEY_LENGTH
    assert key.startswith("catalogue__2024")
    assert LOSSY_SHAPE.fullmatch(key)["body"].endswith("red-mug-front.png")  # type: ignore[index]


ALL_TRICKY = [p for p, _ in LOSSLESS] + [p for p, _ in LOSSY]


@pytest.mark.parametrize("path", ALL_TRICKY)
def test_every_key_is_safe_for_dagster_urls_and_tags(path: str) -> None:
    key = partition_key_for(path)
    assert KEY_SHAPE.fullmatch(key), key
    assert len(key) <= MAX_KEY_LENGTH
    assert unsafe_partition_key_parts(key) == set()
    assert urllib.parse.quote(key, safe="") == key  # nothing to escape in a URL


def test_empty_path_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        partition_key_for("")


def test_paths_designed_to_collide_do_not() -> None:
    paths = [
        "a b.png",
        "a-b.png",
        "a_b.png",
        "a  b.png",
        "a--b.png",
        "a__b.png",
        "a.b.png",
        "a..b.png",
        "a\u2026b.png",
        "a/b.png",
        "a_/b.png",
        "a/_b.png",
        "a-/b.png",
        "a//b.png",
        "A.png",
        "a.png",
        "A.PNG",
        "a.PNG",
        "é.png",
        "e\u0301.png",
        "e.png",
        "ｅ.png",
        "É.png",
        "🦆.png",
        "🐥.png",
        "image.png",
        "x/🦆.png",
        "x/🐥.png",
        "x__🦆.png",
        ".png",
        "_.png",
        "a b.png--8d430527a40b",
        "a-b.png--0000",
        "ß.png",
        "ss.png",
        "SS.png",
        "ẞ.png",
        *[f"{'x' * 30}{i}{'y' * 40}.png" for i in range(50)],  # differ only where truncated
        *[f"{'x' * 80}/{i}.png" for i in range(20)],
    ]
    keys = partition_keys_for(paths)
    assert len(keys) == len(set(paths))
    assert len(set(keys.values())) == len(keys)
    # A lossless key cannot contain '--', so no lossy key can shadow a real file name.
    assert all("--" not in k for p, k in keys.items() if k.replace("__", "/") == p)


def test_collision_is_an_error_not_a_silent_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_path_hash", lambda path: "0" * 12)
    with pytest.raises(PartitionKeyCollisionError, match="a b.png.*a  b.png"):
        partition_keys_for(["a b.png", "a  b.png"])


def test_keys_do_not_depend_on_other_paths() -> None:
    few = ["mug.png", "red mug.png", "a/b.png", "🦆.png"]
    many = [*few, "red-mug.png", "a__b.png", "a b.png", "zzz.png", "🐥.png", *ALL_TRICKY]
    alone = {p: partition_key_for(p) for p in few}
    assert partition_keys_for(few) == alone
    assert {p: partition_keys_for(many)[p] for p in few} == alone
    assert partition_keys_for(reversed(many)) == partition_keys_for(many)


def test_dagster_accepts_and_returns_the_keys() -> None:
    keys = list(partition_keys_for(ALL_TRICKY).values())
    images = DynamicPartitionsDefinition(name="images")
    request = images.build_add_request(keys)
    assert list(request.partition_keys) == keys
    StaticPartitionsDefinition(keys)  # validates substrings and duplicates
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("images", keys)
        assert list(instance.get_dynamic_partitions("images")) == keys
        assert list(images.get_partition_keys(dynamic_partitions_store=instance)) == keys
        for key in keys:
            assert instance.has_dynamic_partition("images", key)
    # The UI and CLI write ranges as 'first...last': no key may contain '...'.
    assert f"{keys[0]}...{keys[-1]}".split("...") == [keys[0], keys[-1]]


# ---------------------------------------------------------------------------------------
# Folder source
# ---------------------------------------------------------------------------------------


def _write(root: Path, relative: str, data: bytes = b"x") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_lists_images_recursively_and_skips_the_rest(tmp_path: Path) -> None:
    images = [
        "mug.png",
        "Photo.JPG",
        "deep/er/still/duck.jpeg",
        "deep/plant.WebP",
        "café au lait.png",
        "Ünïcødé/🦆.png",
        "A.png",
        "a.png",
        "deep/image.gif",  # converted to PNG at registration
        "scan.TIFF",
        "old.bmp",
    ]
    ignored = [
        ".hidden.png",
        ".cache/thumb.png",
        "deep/.git/x.png",
        "notes.txt",
        "mesh.glb",
        "mug.png.part",
        "mug.png~",
        "~$lock.png",
        "#autosave.png#",
        "__MACOSX/x.png",
        "@eaDir/SYNOPHOTO_THUMB.jpg",
        "mug.png.crdownload",
        ".mug.png.Xy12Ab",
        "README",
    ]
    for relative in images + ignored:
        _write(tmp_path, relative, relative.encode())
    (tmp_path / "folder.png").mkdir()  # a folder with an image suffix is not an image
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "deep", target_is_directory=True)  # no loops

    source = FolderImageSource(tmp_path)
    refs = source.list_images()

    assert [r.relative_path for r in refs] == sorted(images)
    assert {r.partition_key for r in refs} == set(partition_keys_for(images).values())
    for ref in refs:
        assert ref.uri == (tmp_path / ref.relative_path).resolve().as_uri()
        assert source.read_bytes(ref) == ref.relative_path.encode()
        assert ref.size == len(ref.relative_path.encode())
        assert source.image_url(ref) is None
    assert source.uri == tmp_path.resolve().as_uri()


def test_folder_keys_are_stable_when_files_are_added(tmp_path: Path) -> None:
    for name in ("b.png", "sub/c d.png", "🦆.png"):
        _write(tmp_path, name)
    before = {r.relative_path: r.partition_key for r in FolderImageSource(tmp_path).list_images()}
    for name in ("a.png", "b b.png", "sub/c-d.png", "sub/c  d.png", "🐥.png", "0.png"):
        _write(tmp_path, name)
    after = {r.relative_path: r.partition_key for r in FolderImageSource(tmp_path).list_images()}
    assert {p: after[p] for p in before} == before
    assert len(set(after.values())) == len(after) == 9


def test_folder_fingerprint_follows_size_and_mtime(tmp_path: Path) -> None:
    path = _write(tmp_path, "img.png", b"one")
    source = FolderImageSource(tmp_path)
    (first,) = source.list_images()
    (again,) = source.list_images()
    assert again == first  # nothing changed: same fingerprint, nothing to do

    path.write_bytes(b"three")
    (bigger,) = source.list_images()
    assert bigger.fingerprint != first.fingerprint
    assert bigger.partition_key == first.partition_key

    # Same size, new content: the write moves mtime (set explicitly: coarse clocks may not).
    stat = path.stat()
    path.write_bytes(b"THREE")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    (rewritten,) = source.list_images()
    assert rewritten.fingerprint not in (first.fingerprint, bigger.fingerprint)


def test_folder_read_refuses_paths_outside_the_root(tmp_path: Path) -> None:
    _write(tmp_path, "inside/a.png")
    _write(tmp_path, "secret.png")
    source = FolderImageSource(tmp_path / "inside")
    (ref,) = source.list_images()
    forged = sources.ImageRef("k", "../secret.png", ref.uri, 1, "f")
    with pytest.raises(ValueError, match="not a path inside"):
        source.read_bytes(forged)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FolderImageSource(tmp_path / "nope").list_images()


def test_is_image_path() -> None:
    assert is_image_path("a/b/C.JPEG")
    assert not is_image_path("a/.b/c.png")
    assert not is_image_path("")
    assert {s.lower() for s in IMAGE_SUFFIXES} == {".png", ".jpg", ".jpeg", ".webp"}


def test_open_image_source_for_folders(tmp_path: Path) -> None:
    _write(tmp_path, "dir with space/é.png")
    spaced = tmp_path / "dir with space"
    specs: list[tuple[str | Path, Path]] = [(str(tmp_path), tmp_path), (tmp_path, tmp_path)]
    specs += [(tmp_path.as_uri(), tmp_path)]
    specs += [(f"file://{tmp_path}", tmp_path), (spaced.as_uri(), spaced), (str(spaced), spaced)]
    for spec, root in specs:
        source = open_image_source(spec)
        assert isinstance(source, FolderImageSource)
        assert source.root == root.resolve()
    assert [r.relative_path for r in open_image_source(spaced.as_uri()).list_images()] == ["é.png"]
    with pytest.raises(ValueError, match="unsupported"):
        open_image_source("gs://bucket/x")
    with pytest.raises(ValueError, match="S3 client"):
        open_image_source("s3://bucket/prefix")
    with pytest.raises(ValueError, match="no bucket"):
        open_image_source("s3:///prefix", s3_client=object())


# ---------------------------------------------------------------------------------------
# S3 source (moto server on loopback)
# ---------------------------------------------------------------------------------------


def _put_all(client, bucket: str, objects: dict[str, bytes]) -> None:
    def put(item: tuple[str, bytes]) -> None:
        client.put_object(Bucket=bucket, Key=item[0], Body=item[1])

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, objects.items()))


def test_s3_lists_past_one_page_under_a_nested_prefix(s3_client, s3_bucket: str) -> None:
    wanted = {f"incoming/batch-1/img-{i:04d}.png": f"image {i}".encode() for i in range(1003)}
    wanted |= {
        "incoming/batch-1/sub/Deep Ünïcødé.JPG": b"deep",
        "incoming/batch-1/A.png": b"upper",
        "incoming/batch-1/a.png": b"lower",
    }
    others = {
        "incoming/batch-10/img-0000.png": b"sibling prefix, not below ours",
        "incoming/batch-1.png": b"beside the prefix",
        "incoming/batch-1/notes.txt": b"not an image",
        "incoming/batch-1/.cache/img.png": b"hidden",
        "incoming/batch-1/sub/": b"",  # a console-made folder marker
        "other/img.png": b"elsewhere",
    }
    _put_all(s3_client, s3_bucket, wanted | others)

    source = S3ImageSource(s3_client, s3_bucket, "/incoming/batch-1")
    assert source.uri == f"s3://{s3_bucket}/incoming/batch-1/"
    refs = source.list_images()

    assert len(refs) == len(wanted) > 1000  # more than one list_objects_v2 page
    assert [r.relative_path for r in refs] == sorted(
        k.removeprefix("incoming/batch-1/") for k in wanted
    )
    assert len({r.partition_key for r in refs}) == len(refs)
    by_path = {r.relative_path: r for r in refs}
    deep = by_path["sub/Deep Ünïcødé.JPG"]
    assert deep.uri == f"s3://{s3_bucket}/incoming/batch-1/sub/Deep Ünïcødé.JPG"
    assert deep.partition_key == partition_key_for("sub/Deep Ünïcødé.JPG")
    assert deep.size == 4
    assert deep.fingerprint == hashlib.md5(b"deep").hexdigest()  # single-part ETag, unquoted
    assert source.read_bytes(deep) == b"deep"
    assert by_path["A.png"].partition_key != by_path["a.png"].partition_key

    # Keys come from the path below the prefix: the whole bucket sees longer paths and keys.
    whole = S3ImageSource(s3_client, s3_bucket).list_images()
    keys = {r.relative_path: r.partition_key for r in whole}
    assert keys["incoming/batch-1/A.png"] == "incoming__batch-1__A.png"
    assert keys["incoming/batch-1.png"] == "incoming__batch-1.png"
    assert "incoming/batch-1/.cache/img.png" not in keys


def test_s3_fingerprint_changes_with_content(s3_client, s3_bucket: str) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="in/x.png", Body=b"one")
    source = open_image_source(f"s3://{s3_bucket}/in", s3_client=s3_client)
    assert isinstance(source, S3ImageSource)
    (first,) = source.list_images()
    s3_client.put_object(Bucket=s3_bucket, Key="in/x.png", Body=b"two")  # same size
    (second,) = source.list_images()
    assert second.partition_key == first.partition_key
    assert second.fingerprint != first.fingerprint


def test_presigned_url_is_fetchable(s3_client, s3_bucket: str) -> None:
    data = (SAMPLES_DIR / "mug.png").read_bytes()
    key = "uploads/shop front/mug café.png"
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=data, ContentType="image/png")
    source = S3ImageSource(s3_client, s3_bucket, "uploads", url_expiry=120)
    (ref,) = source.list_images()

    url = source.image_url(ref)
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.content == data
    assert describe_image(response.content).sha256 == hashlib.sha256(data).hexdigest()

    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    if "X-Amz-Expires" in query:  # SigV4
        assert query["X-Amz-Expires"] == ["120"]
    else:  # SigV2: an absolute deadline
        assert abs(int(query["Expires"][0]) - (time.time() + 120)) < 60
    longer = urllib.parse.parse_qs(
        urllib.parse.urlsplit(source.image_url(ref, expires_in=3000)).query
    )
    assert longer != query

    tampered = url.replace("mug%20caf", "mug%20cAf")
    assert httpx.get(tampered, timeout=10).status_code in (403, 404)


def test_s3_expiry_is_validated(s3_client, s3_bucket: str) -> None:
    with pytest.raises(ValueError, match="expiry"):
        S3ImageSource(s3_client, s3_bucket, url_expiry=0)
    with pytest.raises(ValueError, match="expiry"):
        S3ImageSource(s3_client, s3_bucket, url_expiry=8 * 24 * 3600)


# ---------------------------------------------------------------------------------------
# describe_image and the samples
# ---------------------------------------------------------------------------------------

SAMPLES = sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
FORMAT_OF_SUFFIX = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def test_there_are_varied_samples() -> None:
    assert 5 <= len(SAMPLES) <= 6
    modes = {Image.open(p).mode for p in SAMPLES}
    assert "RGBA" in modes and "RGB" in modes
    assert any(p.suffix == ".jpg" for p in SAMPLES)
    assert [p.name for p in SAMPLES] == [partition_key_for(p.name) for p in SAMPLES]


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_describe_each_sample(path: Path) -> None:
    data = path.read_bytes()
    info = describe_image(data)
    assert info == ImageInfo(
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        width=info.width,
        height=info.height,
        format=FORMAT_OF_SUFFIX[path.suffix],
    )
    assert 256 <= info.width <= 384 and 256 <= info.height <= 384
    assert info.size < 60_000
    with Image.open(path) as image:
        if image.mode == "RGBA":  # a real cut-out: transparent corners, opaque middle
            alpha = image.getchannel("A")
            assert alpha.getpixel((0, 0)) == 0
            assert alpha.getpixel((image.width // 2, image.height // 2)) == 255


def test_samples_regenerate_byte_identically(tmp_path: Path) -> None:
    script = Path(__file__).with_name("make_samples.py")
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == [p.name for p in SAMPLES]
    for sample in SAMPLES:
        assert (tmp_path / sample.name).read_bytes() == sample.read_bytes(), sample.name


def _png() -> bytes:
    return (SAMPLES_DIR / "mug.png").read_bytes()


def _jpeg() -> bytes:
    return (SAMPLES_DIR / "vase.jpg").read_bytes()


def _flip_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def _ico() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "ICO")
    return buffer.getvalue()


def _webp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (300, 260), (10, 200, 30, 128)).save(buffer, "WEBP")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: b"", "empty"),
        (lambda: b"hello, I am not an image", "not a recognised image"),
        (lambda: b"<html><body>404</body></html>", "not a recognised image"),
        (lambda: _png()[:40], "corrupt or truncated PNG header"),
        (lambda: _png()[: len(_png()) // 2], "truncated"),
        (lambda: _png()[:-20], "truncated"),  # loses IEND
        (lambda: _flip_byte(_png(), len(_png()) // 2), "corrupt"),  # IDAT CRC mismatch
        (lambda: _jpeg()[: len(_jpeg()) // 2], "truncated"),
        (lambda: _jpeg()[:200], "corrupt or truncated JPEG header"),
        (lambda: _ico(), "unsupported image format ICO"),
    ],
    ids=[
        "empty",
        "text",
        "html",
        "png-header",
        "png-half",
        "png-no-end",
        "png-bad-crc",
        "jpeg-half",
        "jpeg-header",
        "gif",
    ],
)
def test_describe_rejects_bad_data_and_says_why(make, message: str) -> None:
    with pytest.raises(InvalidImageError, match=message) as caught:
        describe_image(make())
    assert isinstance(caught.value, ValueError)


def test_describe_accepts_webp_and_buffers() -> None:
    data = _webp()
    info = describe_image(memoryview(data))
    assert (info.format, info.width, info.height, info.size) == ("WEBP", 300, 260, len(data))


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_a_jpeg_is_checked_at_an_eighth_and_a_cut_one_still_fails(monkeypatch, progressive):
    """JPEG decodes at 1/8 scale for the check (every entropy-coded block is still read):
    the full size is reported, what is uploaded is the original bytes, and a file cut short
    anywhere fails as it would at full size."""
    import numpy as np
    from PIL.JpegImagePlugin import JpegImageFile

    asked = []
    draft = JpegImageFile.draft

    def spy(self, mode, size):
        applied = draft(self, mode, size)
        asked.append((self.size, applied is not None))
        return applied

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    noise = np.random.default_rng(3).integers(0, 255, (1200, 1600, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=90, progressive=progressive)
    data = buffer.getvalue()

    upload = prepare_upload(data)
    assert (upload.info.width, upload.info.height, upload.info.format) == (1600, 1200, "JPEG")
    assert upload.payload == data
    assert asked == [((200, 150), True)]  # decoded at an eighth of 1600 x 1200
    for keep in (0.3, 0.67, 0.97):
        with pytest.raises(InvalidImageError, match="truncated JPEG"):
            describe_image(data[: int(len(data) * keep)])


def test_content_identity_differs_from_fingerprint(tmp_path: Path) -> None:
    """Same bytes under two names: two partitions, one sha256 (the store dedupes on it)."""
    data = _png()
    _write(tmp_path, "one.png", data)
    _write(tmp_path, "copy/one.png", data)
    source = FolderImageSource(tmp_path)
    refs = source.list_images()
    shas = {describe_image(source.read_bytes(r)).sha256 for r in refs}
    assert len({r.partition_key for r in refs}) == 2 and len(shas) == 1


# ---------------------------------------------------------------------------------------
# Bad input: errors never quote a file's bytes
# ---------------------------------------------------------------------------------------

MARKER = b"QZXJ"  # four bytes that appear in no message of ours, so any echo is visible


def _png_with_chunk(ctype: bytes, body: bytes, *, good_crc: bool) -> bytes:
    """The mug PNG with one more chunk before IEND (so the header still opens)."""
    png = _png()
    crc = zlib.crc32(ctype + body) & 0xFFFFFFFF ^ (0 if good_crc else 1)
    chunk = struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)
    return png[:-12] + chunk + png[-12:]


def _quotes(text: str) -> bool:
    forms = {MARKER.decode(), MARKER.hex(), repr(MARKER)[2:-1], MARKER.decode()[::-1]}
    return any(form in text for form in forms)


ECHO_CASES = {
    # The marker within the first bytes, where a message that quotes a file's start looks.
    "text": MARKER + b" password=" + MARKER * 4 + b"\n",
    "html": b"<p>" + MARKER + b"</p></html>",
    "json": b'{"' + MARKER + b'": 1}',
    "binary": bytes(range(1, 8)) + MARKER * 8,
    "png-signature-then-junk": b"\x89PNG\r\n\x1a\n" + MARKER * 8,
    # Pillow's own message here is "broken PNG file (bad header checksum in b'QZXJ')".
    "png-chunk-bad-crc": _png_with_chunk(MARKER, b"secret", good_crc=False),
    "jpeg-signature-then-junk": b"\xff\xd8\xff" + MARKER * 20,
    "gif-signature-then-junk": b"GIF89a" + MARKER * 20,
    "tiff-signature-then-junk": b"II*\x00" + MARKER * 20,
    "bmp-signature-then-junk": b"BM" + MARKER * 20,
    "ico": _ico() + MARKER,
    "pdf": b"%PDF" + MARKER,
}


@pytest.mark.parametrize("data", ECHO_CASES.values(), ids=ECHO_CASES.keys())
def test_errors_say_what_the_data_is_without_quoting_it(data: bytes) -> None:
    for call in (describe_image, prepare_upload):
        with pytest.raises(InvalidImageError) as caught:
            call(data)
        printed = "".join(traceback.format_exception(caught.value))  # what a log would show
        assert not _quotes(printed), printed
        assert f"{len(data)} bytes" in str(caught.value)


def test_errors_name_the_kind_of_data() -> None:
    kinds = {
        "text": "bytes of text",
        "html": "HTML or XML text",
        "json": "JSON-like text",
        "binary": "binary data",
        "pdf": "a PDF document",
        "ico": "unsupported image format ICO",
        "png-chunk-bad-crc": "corrupt PNG image: a checksum does not match",
        "gif-signature-then-junk": "corrupt or truncated GIF header",
    }
    for name, words in kinds.items():
        with pytest.raises(InvalidImageError, match=re.escape(words)):
            describe_image(ECHO_CASES[name])


# ---------------------------------------------------------------------------------------
# Bad input: symbolic links
# ---------------------------------------------------------------------------------------


@pytest.fixture
def linked(tmp_path: Path) -> tuple[FolderImageSource, Path, dict[str, Path]]:
    """An images folder with every kind of link, next to a secret outside it."""
    root, outside = tmp_path / "images", tmp_path / "outside"
    _write(root, "real/mug.png", _png())
    secret = _write(outside, "secret.png", b"ssh-rsa " + MARKER * 8)
    _write(outside, "photos/duck.png", _png())
    links = {
        "inside.png": Path("real/mug.png"),  # relative, stays inside: followed
        "abs-inside.png": root.resolve() / "real/mug.png",
        "outside.png": Path("../outside/secret.png"),
        "abs-outside.png": secret,
        "via-inside.png": Path("outside.png"),  # a link inside that leads out
        "dangling.png": Path("real/gone.png"),
        "loop.png": Path("loop.png"),
        "photos": outside / "photos",  # a folder outside
        "again": Path("real"),  # a folder inside
        "notes.txt": secret,  # not an image name, and out: still reported
    }
    for name, target in links.items():
        (root / name).symlink_to(target)
    return FolderImageSource(root), secret, {name: root / name for name in links}


def test_links_out_of_the_folder_are_reported_never_listed(linked) -> None:
    source, _, _ = linked
    listing = source.scan()
    assert [r.relative_path for r in listing.images] == [
        "abs-inside.png",
        "inside.png",
        "real/mug.png",
    ]
    for ref in listing.images:
        assert source.read_bytes(ref) == _png()
    assert source.list_images() == listing.images
    reasons = dict(listing.skipped)
    assert list(reasons) == sorted(reasons)
    assert reasons == {
        "abs-outside.png": "symbolic link to a file outside the images folder; not followed",
        "again": "symbolic link to a folder; folders are not followed",
        "dangling.png": "broken symbolic link: its target does not exist; not read",
        "loop.png": "symbolic link loop; not read",
        "notes.txt": "symbolic link to a file outside the images folder; not followed",
        "outside.png": "symbolic link to a file outside the images folder; not followed",
        "photos": "symbolic link to a folder; folders are not followed",
        "via-inside.png": "symbolic link to a file outside the images folder; not followed",
    }


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("outside.png", "outside the images folder"),
        ("abs-outside.png", "outside the images folder"),
        ("via-inside.png", "outside the images folder"),
        ("dangling.png", "broken symbolic link"),
        ("loop.png", "symbolic link loop"),
    ],
)
def test_reading_a_bad_link_is_refused(linked, name: str, reason: str) -> None:
    source, _, _ = linked
    ref = sources.ImageRef("k", name, "file:///x", 1, "f")
    with pytest.raises(ImageReadError, match=reason) as caught:
        source.read_bytes(ref)
    assert isinstance(caught.value, OSError)  # the sensor treats unreadable as gone
    assert not _quotes(str(caught.value))


def test_a_link_swapped_in_after_the_listing_is_not_followed(linked) -> None:
    source, secret, paths = linked
    refs = {r.relative_path: r for r in source.list_images()}
    paths["inside.png"].unlink()
    paths["inside.png"].symlink_to(secret)  # the listed link now leads out
    real = source.root / "real/mug.png"
    real.unlink()
    real.symlink_to(secret)  # the listed plain file is now a link out
    for name in ("inside.png", "real/mug.png", "abs-inside.png"):
        with pytest.raises(ImageReadError, match="outside the images folder"):
            source.read_bytes(refs[name])


def test_a_folder_swapped_for_a_link_after_the_listing_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _write(root, "sub/a.png", _png())
    _write(tmp_path, "elsewhere/a.png", b"private " + MARKER)
    source = FolderImageSource(root)
    (ref,) = source.list_images()
    (root / "sub").rename(root / "sub-old")
    (root / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ImageReadError, match="outside the images folder"):
        source.read_bytes(ref)


def test_reads_never_follow_a_link_at_any_component(tmp_path: Path) -> None:
    """The open after the realpath check: a link swapped in between is refused, not followed
    (what a race would look like, made to happen by calling the open directly)."""
    root = (tmp_path / "images").resolve()
    _write(tmp_path, "elsewhere/a.png", b"private")
    root.mkdir()
    (root / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "b.png").symlink_to(tmp_path / "elsewhere/a.png")
    for parts in (("sub", "a.png"), ("b.png",)):
        with pytest.raises(ImageReadError, match="became a symbolic link"):
            sources._open_beneath(root, parts, "/".join(parts))


@pytest.mark.timeout(20)
def test_a_named_pipe_is_reported_and_never_opened_for_a_blocking_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")  # no writer: a blocking open would hang for ever
    _write(tmp_path, "ok.png", _png())
    source = FolderImageSource(tmp_path)
    listing = source.scan()
    assert [r.relative_path for r in listing.images] == ["ok.png"]
    assert listing.skipped == [("pipe.png", "not a regular file (a named pipe); not read")]
    with pytest.raises(ImageReadError, match="not a regular file"):
        source.read_bytes(sources.ImageRef("k", "pipe.png", "file:///x", 0, "f"))


# ---------------------------------------------------------------------------------------
# Bad input: files that are not images, and other image formats
# ---------------------------------------------------------------------------------------


def test_scan_reports_every_file_it_does_not_take(tmp_path: Path) -> None:
    reported = {
        "notes.txt": "not an image: .txt is not an image type",
        "README": "not an image: the name has no extension",
        "mesh.glb": "not an image: .glb is not an image type",
        "mug.png.part": "not an image: .part is not an image type",
        "IMG_0001.HEIC": ".heic images are not supported (convert to PNG or JPEG",
        "layers.psd": ".psd images are not supported",
        "sub/vector.svg": ".svg images are not supported",
    }
    ignored = [".DS_Store", "._mug.png", "Thumbs.db", "desktop.ini", "~$lock.png", "#x.png#"]
    ignored += [".git/config", "__MACOSX/._x.png", "@eaDir/x.jpg", "sub/.thumbs/a.png"]
    for name in [*reported, *ignored, "ok.png"]:
        _write(tmp_path, name, b"whatever")
    listing = FolderImageSource(tmp_path).scan()
    assert [r.relative_path for r in listing.images] == ["ok.png"]
    assert [path for path, _ in listing.skipped] == sorted(reported)
    for path, reason in listing.skipped:
        assert reason.startswith(reported[path]), (path, reason)
        assert ".png" in reason and ".tiff" in reason  # says what would have been taken


def test_s3_scan_reports_what_it_does_not_take(s3_client, s3_bucket: str) -> None:
    objects = {
        "in/ok.png": b"x",
        "in/scan.tif": b"x",
        "in/notes.txt": b"x",
        "in/photo.heic": b"x",
        "in/../up.png": b"x",  # S3 keeps it; a URL client would fetch 'up.png' instead
        "in/a/./b.png": b"x",
        "in/.DS_Store": b"x",
        "in/sub/": b"",
        "in/.cache/x.png": b"x",
    }
    _put_all(s3_client, s3_bucket, objects)
    listing = S3ImageSource(s3_client, s3_bucket, "in").scan()
    assert [r.relative_path for r in listing.images] == ["ok.png", "scan.tif"]
    reasons = dict(listing.skipped)
    assert sorted(reasons) == ["../up.png", "a/./b.png", "notes.txt", "photo.heic"]
    assert reasons["../up.png"].startswith("the key has a '.' or '..' folder")
    assert reasons["photo.heic"].startswith(".heic images are not supported")


def _encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _frames(fmt: str) -> bytes:
    first, second = Image.new("RGB", (24, 16), "red"), Image.new("RGB", (24, 16), "blue")
    return _encoded(first, fmt, save_all=True, append_images=[second])


CONVERTED = {
    "tiff-rgb": (lambda: _encoded(Image.new("RGB", (30, 20), "red"), "TIFF"), "TIFF"),
    "tiff-lzw": (
        lambda: _encoded(Image.new("RGB", (30, 20), "red"), "TIFF", compression="tiff_lzw"),
        "TIFF",
    ),
    "tiff-cmyk": (lambda: _encoded(Image.new("CMYK", (30, 20), (0, 255, 255, 0)), "TIFF"), "TIFF"),
    "tiff-16-bit": (lambda: _encoded(Image.new("I;16", (30, 20), 40000), "TIFF"), "TIFF"),
    "tiff-two-pages": (lambda: _frames("TIFF"), "TIFF"),
    "gif": (lambda: _encoded(Image.new("RGB", (30, 20), "red"), "GIF"), "GIF"),
    "gif-animated": (lambda: _frames("GIF"), "GIF"),
    "bmp": (lambda: _encoded(Image.new("RGB", (30, 20), "red"), "BMP"), "BMP"),
    "bmp-rgba": (lambda: _encoded(Image.new("RGBA", (30, 20), (255, 0, 0, 255)), "BMP"), "BMP"),
}


@pytest.mark.parametrize(("make", "fmt"), CONVERTED.values(), ids=CONVERTED.keys())
def test_other_formats_become_a_png_of_their_first_frame(make, fmt: str) -> None:
    data = make()
    upload = prepare_upload(data)
    info = upload.info
    assert info == describe_image(data)
    assert (info.format, info.size, info.sha256) == (fmt, len(data), _sha256(data))
    assert upload.converted and info.needs_conversion
    with Image.open(io.BytesIO(upload.payload)) as png:
        assert png.format == "PNG"
        assert png.size == (info.width, info.height)
        assert getattr(png, "n_frames", 1) == 1
        if png.mode in ("RGB", "RGBA", "P"):
            assert png.convert("RGB").getpixel((0, 0)) == (255, 0, 0)  # the first frame: red


def test_the_png_is_turned_upright_by_the_exif_orientation() -> None:
    data = _encoded(Image.new("RGB", (40, 20), "red"), "TIFF", tiffinfo={274: 6})  # 90 deg
    upload = prepare_upload(data)
    with Image.open(io.BytesIO(upload.payload)) as png:
        assert png.size == (20, 40) == (upload.info.width, upload.info.height)


@pytest.mark.parametrize("data", [_png(), _jpeg(), _webp()], ids=["png", "jpeg", "webp"])
def test_formats_the_api_reads_are_sent_as_they_are(data: bytes) -> None:
    upload = prepare_upload(data)
    assert upload.payload == data and not upload.converted


def test_the_bytes_decide_the_format_not_the_suffix(tmp_path: Path) -> None:
    gif = _encoded(Image.new("RGB", (8, 8), "red"), "GIF")
    _write(tmp_path, "really-a-gif.png", gif)
    source = FolderImageSource(tmp_path)
    (ref,) = source.list_images()
    upload = prepare_upload(source.read_bytes(ref))
    assert upload.info.format == "GIF" and upload.converted


@pytest.mark.parametrize("fmt", ["TIFF", "GIF", "BMP"])
def test_truncated_converted_formats_fail_alone_and_say_so(fmt: str) -> None:
    noise = Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48)
    data = _encoded(noise, fmt)
    with pytest.raises(
        InvalidImageError, match=f"(truncated|corrupt).*{fmt}|{fmt}.*(truncat|corrupt)"
    ):
        prepare_upload(data[: len(data) // 2])


def test_a_png_made_too_large_to_upload_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _encoded(Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)), "BMP")
    monkeypatch.setattr(sources, "MAX_IMAGE_BYTES", len(data))  # the BMP fits, its PNG not
    with pytest.raises(InvalidImageError, match="the PNG made from this BMP image is"):
        prepare_upload(data)


# ---------------------------------------------------------------------------------------
# Bad input: sizes and pixel counts
# ---------------------------------------------------------------------------------------


def test_a_file_over_the_upload_limit_is_skipped_and_never_read(tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    with huge.open("wb") as fh:
        fh.truncate(sources.MAX_IMAGE_BYTES + 1)  # sparse: no disk used
    _write(tmp_path, "ok.png", _png())
    source = FolderImageSource(tmp_path)
    listing = source.scan()
    assert [r.relative_path for r in listing.images] == ["ok.png"]
    assert listing.skipped == [
        (
            "huge.png",
            "200.0 MiB (209,715,201 bytes) is over the 200 MiB upload limit; not read "
            "(downscale or recompress it)",
        )
    ]
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError, match="over the 200 MiB upload limit"):
            source.read_bytes(sources.ImageRef("k", "huge.png", huge.as_uri(), 0, "f"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # checked from fstat: not one MiB was read


def test_a_file_that_grew_past_the_limit_after_listing_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "MAX_IMAGE_BYTES", 1000)
    path = _write(tmp_path, "img.png", b"x" * 1000)
    source = FolderImageSource(tmp_path)
    (ref,) = source.list_images()
    path.write_bytes(b"x" * 1001)
    with pytest.raises(
        ImageTooLargeError, match="1,001 bytes is over the 1,000 bytes upload limit"
    ):
        source.read_bytes(ref)


def test_s3_objects_over_the_limit_are_skipped_and_not_read(
    s3_client, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "MAX_IMAGE_BYTES", 1000)
    s3_client.put_object(Bucket=s3_bucket, Key="in/small.png", Body=b"x" * 1000)
    s3_client.put_object(Bucket=s3_bucket, Key="in/big.png", Body=b"x" * 1001)
    source = S3ImageSource(s3_client, s3_bucket, "in")
    listing = source.scan()
    assert [r.relative_path for r in listing.images] == ["small.png"]
    assert [p for p, _ in listing.skipped] == ["big.png"]
    assert "over the" in listing.skipped[0].reason
    s3_client.put_object(Bucket=s3_bucket, Key="in/small.png", Body=b"x" * 5000)  # grew
    with pytest.raises(ImageTooLargeError):
        source.read_bytes(listing.images[0])


def _png_of_size(width: int, height: int, *, complete: bool = True) -> bytes:
    """A real 1-bit PNG of width x height: all-zero rows compress to almost nothing."""

    def chunk(ctype: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(ctype + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    if not complete:
        idat = idat[: len(idat) // 2]  # decoding this would fail as truncated
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """The vase JPEG with its frame header (SOF) rewritten: only the header says the size."""
    data = bytearray(_jpeg())
    at = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_the_png_helper_makes_a_real_image() -> None:
    info = describe_image(_png_of_size(300, 200))
    assert (info.format, info.width, info.height) == ("PNG", 300, 200)


@pytest.mark.parametrize(
    "data",
    [_png_of_size(12_000, 12_000, complete=False), _jpeg_claiming(12_000, 12_000)],
    ids=["png", "jpeg"],
)
def test_12k_by_12k_is_refused_from_the_header_naming_size_and_limit(data: bytes) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for call in (describe_image, prepare_upload):
            # The pixels are truncated: a decode would say so. The header alone decides.
            with pytest.raises(InvalidImageError) as error:
                call(data)
            assert str(error.value).startswith(
                "image is 12000x12000 (144.0 megapixels), over the limit of 67.1 megapixels "
                "(8192x8192); not decoded"
            )
    assert [str(w.message) for w in caught] == []  # no DecompressionBombWarning, nothing


def test_a_decompression_bomb_is_an_error_not_a_warning(capfd: pytest.CaptureFixture[str]) -> None:
    bomb = _png_of_size(20_000, 20_000)  # 400 MP: past Pillow's own error threshold
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InvalidImageError, match="more than 179.0 megapixels, over the limit"):
            describe_image(bomb)
    assert caught == []
    assert capfd.readouterr().err == ""


def test_a_lower_pillow_limit_set_by_the_application_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    assert describe_image(_png_of_size(200, 200)).width == 200  # 40,000 pixels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InvalidImageError, match=r"320x384 .* limit of 0.1 megapixels"):
            describe_image(_jpeg_claiming(320, 384))
        with pytest.raises(InvalidImageError, match="more than 0.2 megapixels"):
            describe_image(_png_of_size(500, 500))  # past Pillow's 2x: it refuses first
    assert caught == []


def test_decoding_leaves_the_callers_warning_filters_alone() -> None:
    before = list(warnings.filters)
    describe_image(_png())
    with pytest.raises(InvalidImageError):
        describe_image(_png_of_size(12_000, 12_000))
    assert warnings.filters == before


# ---------------------------------------------------------------------------------------
# Bad input: names, S3 keys, duplicates
# ---------------------------------------------------------------------------------------

AWKWARD_NAMES = [
    "red mug.png",
    "café au lait.png",
    "cafe\u0301.png",
    "Ωμέγα/Привет мир.jpg",
    "🦆.png",
    "a..b.png",
    "x..png",
    "dots.../y.png",
    "$(touch PWNED).png",
    "`touch PWNED`.png",
    "; rm -rf ~ ;.png",
    "a && b || c.png",
    'it\'s "quoted".png',
    "*.png",
    "?.png",
    "[a-z].png",
    "{a,b}.png",
    "<in>|out.png",
    "100% real.png",
    "a+b=c.png",
    "hash#tag.png",
    "back\\slash.png",
    "tab\there.png",
    "new\nline.png",
    "-rf.png",
    "--help.png",
]


def test_awkward_local_names_list_read_and_key_safely(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for i, name in enumerate(AWKWARD_NAMES):
        _write(root, name, f"image {i}".encode())
    source = FolderImageSource(root)
    listing = source.scan()
    assert listing.skipped == []
    refs = {r.relative_path: r for r in listing.images}
    assert sorted(refs) == sorted(AWKWARD_NAMES)
    for i, name in enumerate(AWKWARD_NAMES):
        assert source.read_bytes(refs[name]) == f"image {i}".encode()
        assert KEY_SHAPE.fullmatch(refs[name].partition_key)
    keys = [r.partition_key for r in listing.images]
    assert len(set(keys)) == len(keys)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("images", keys)
        assert list(instance.get_dynamic_partitions("images")) == keys
    assert not list(tmp_path.rglob("PWNED"))  # nothing was ever handed to a shell
    assert not Path("PWNED").exists()


AWKWARD_KEYS = [
    "with space.png",
    "ünï cødé/😀.png",
    "a+b.png",
    "100%.png",
    "%41%2F.png",  # looks percent-encoded: must stay literal
    "hash#tag.png",
    "what?.png",
    "q?x=1&y=2.png",
    "semi;colon=.png",
    "a..b.png",
    "dir//double.png",
    "tab\t.png",
    "$(id).png",
    "'q'\".png",
    "back\\slash.png",
    "*.png",
    "<>.png",
]


def test_awkward_s3_keys_list_read_presign_and_key_safely(s3_client, s3_bucket: str) -> None:
    objects = {f"in put/{k}": f"object {i}".encode() for i, k in enumerate(AWKWARD_KEYS)}
    _put_all(s3_client, s3_bucket, objects)
    source = S3ImageSource(s3_client, s3_bucket, "in put")
    listing = source.scan()
    assert listing.skipped == []
    refs = {r.relative_path: r for r in listing.images}
    assert sorted(refs) == sorted(AWKWARD_KEYS)
    for i, key in enumerate(AWKWARD_KEYS):
        ref, data = refs[key], f"object {i}".encode()
        assert ref.uri == f"s3://{s3_bucket}/in put/{key}"
        assert source.read_bytes(ref) == data
        response = httpx.get(source.image_url(ref, expires_in=60), timeout=10)
        assert (response.status_code, response.content) == (200, data), key
        assert KEY_SHAPE.fullmatch(ref.partition_key)
    keys = [r.partition_key for r in listing.images]
    assert len(set(keys)) == len(keys)


def test_an_object_deleted_after_listing_is_a_clear_not_found(s3_client, s3_bucket: str) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="in/gone.png", Body=b"x")
    source = S3ImageSource(s3_client, s3_bucket, "in")
    (ref,) = source.list_images()
    s3_client.delete_object(Bucket=s3_bucket, Key="in/gone.png")
    with pytest.raises(FileNotFoundError, match=f"s3://{s3_bucket}/in/gone.png does not exist"):
        source.read_bytes(ref)


def test_an_unreachable_s3_is_a_connection_error(s3_env) -> None:
    import boto3
    from botocore.config import Config

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    source = S3ImageSource(client, "bucket", "in")
    with pytest.raises(ConnectionError, match="S3 GET s3://bucket/in/x.png failed"):
        source.read_bytes(sources.ImageRef("k", "x.png", "s3://bucket/in/x.png", 1, "f"))


def test_the_same_content_twice_is_two_partitions_with_one_identity(
    tmp_path: Path, s3_client, s3_bucket: str
) -> None:
    tiff = _encoded(Image.new("RGB", (30, 20), "red"), "TIFF")
    for name in ("a/scan.tiff", "b/scan copy.tiff"):
        _write(tmp_path, name, tiff)
        s3_client.put_object(Bucket=s3_bucket, Key=f"in/{name}", Body=tiff)
    for source in (FolderImageSource(tmp_path), S3ImageSource(s3_client, s3_bucket, "in")):
        refs = source.list_images()
        uploads = [prepare_upload(source.read_bytes(r)) for r in refs]
        assert len({r.partition_key for r in refs}) == 2
        assert {u.info.sha256 for u in uploads} == {_sha256(tiff)}  # of the TIFF, not the PNG
        assert len({u.payload for u in uploads}) == 1


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
