"""Image sources: partition keys, folder and S3 listing, presigned URLs, image validation."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import time
import urllib.parse
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
    InvalidImageError,
    PartitionKeyCollisionError,
    S3ImageSource,
    describe_image,
    is_image_path,
    open_image_source,
    partition_key_for,
    partition_keys_for,
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
        "deep/image.gif",
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
    script = SAMPLES_DIR / "make_samples.py"
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


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "GIF")
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
        (lambda: _gif(), "unsupported image format GIF"),
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


def test_content_identity_differs_from_fingerprint(tmp_path: Path) -> None:
    """Same bytes under two names: two partitions, one sha256 (the store dedupes on it)."""
    data = _png()
    _write(tmp_path, "one.png", data)
    _write(tmp_path, "copy/one.png", data)
    source = FolderImageSource(tmp_path)
    refs = source.list_images()
    shas = {describe_image(source.read_bytes(r)).sha256 for r in refs}
    assert len({r.partition_key for r in refs}) == 2 and len(shas) == 1
