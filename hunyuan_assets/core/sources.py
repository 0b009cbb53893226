"""Where input images come from (a folder or an S3 prefix) and the partition key of each.

No Dagster here: the S3 source takes a boto3 client, which in production comes from
dagster-aws's ``S3Resource.get_client()``.

Partition keys are a pure function of an image's path relative to its source, so a key
never changes when other files come or go. The rules (see :func:`partition_key_for`) are
frozen: changing any of them re-keys existing partitions, which would orphan their history.
"""

from __future__ import annotations

import abc
import hashlib
import io
import os
import re
import unicodedata
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_FORMATS",
    "IMAGE_SUFFIXES",
    "DEFAULT_URL_EXPIRY",
    "MAX_KEY_LENGTH",
    "SAMPLES_DIR",
    "FolderImageSource",
    "ImageInfo",
    "ImageRef",
    "ImageSource",
    "InvalidImageError",
    "PartitionKeyCollisionError",
    "S3ImageSource",
    "describe_image",
    "is_image_path",
    "open_image_source",
    "partition_key_for",
    "partition_keys_for",
]

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
# What the bytes must decode as; a GIF renamed to .png is rejected before it is paid for.
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})

# 63 = the longest strict Dagster tag value and Kubernetes label value, so a key can be
# used as either; it also fits MySQL's 64-character index prefix on dynamic partitions.
MAX_KEY_LENGTH = 63
_HASH_LENGTH = 12  # hex digits of sha256: 48 bits, collisions need the same readable stem too
_LOSSY_MARK = "--"  # never occurs in a lossless key (runs of punctuation are collapsed)
_PATH_SEPARATOR = "__"  # never occurs inside a sanitised segment, so '/' maps back uniquely

# Directories that sync tools and NAS boxes fill with thumbnails and metadata.
_IGNORED_DIR_NAMES = frozenset({"__macosx", "@eadir", "$recycle.bin"})
# Hidden files, editor/Office lock files ('~$x.png') and rsync/syncthing temp copies
# ('.x.png.Ab12Cd') start like this; partial downloads end in '.part' etc., not an image suffix.
_TEMP_PREFIXES = ("~", "#", ".")

DEFAULT_URL_EXPIRY = 3600
_MAX_URL_EXPIRY = 7 * 24 * 3600  # the SigV4 limit for presigned URLs


class InvalidImageError(ValueError):
    """The bytes are not a usable image; the message says what is wrong."""


class PartitionKeyCollisionError(ValueError):
    """Two different paths produced one partition key (should be impossible; never ignore)."""


@dataclass(frozen=True)
class ImageRef:
    """One image in a source, as listed.

    ``fingerprint`` is a cheap change signal for sensors (size + mtime_ns locally, the ETag on
    S3); the content identity is the sha256 from :func:`describe_image`.
    """

    partition_key: str
    relative_path: str  # '/'-separated, relative to the source root or prefix
    uri: str  # file:// URI for a folder source, s3://bucket/key for S3
    size: int
    fingerprint: str


@dataclass(frozen=True)
class ImageInfo:
    """What the decoded bytes are: content identity (sha256), dimensions, format."""

    sha256: str
    size: int
    width: int
    height: int
    format: str


# ---------------------------------------------------------------------------------------
# Partition keys
# ---------------------------------------------------------------------------------------

# Letters that NFKD does not decompose into ASCII + combining marks.
_LATIN = {
    "ß": "ss", "ẞ": "SS", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe", "Ø": "O", "ø": "o",
    "Đ": "D", "đ": "d", "Ð": "D", "ð": "d", "Ł": "L", "ł": "l", "Þ": "TH", "þ": "th",
    "Ħ": "H", "ħ": "h", "ı": "i", "Ŀ": "L", "ŀ": "l", "Ŋ": "NG", "ŋ": "ng", "ſ": "s",
}  # fmt: skip
_CYRILLIC_ASCII = (
    "a b v g g d e ye yo zh z i i yi y k l m n o p r s t u f kh ts ch sh shch"
    " _ y _ e yu ya"  # '_': the hard and soft signs, which have no sound of their own
)
_CYRILLIC = dict(zip("абвгґдеєёжзиіїйклмнопрстуфхцчшщъыьэюя", _CYRILLIC_ASCII.split(), strict=True))
_GREEK = dict(
    zip(
        "αβγδεζηθικλμνξοπρσςτυφχψω",
        "a v g d e z i th i k l m n x o p r s s t y f ch ps o".split(),
        strict=True,
    )
)


def _transliteration_table() -> dict[int, str]:
    table = dict(_LATIN)
    for letters in (_CYRILLIC, _GREEK):
        for lower, ascii_ in letters.items():
            ascii_ = "" if ascii_ == "_" else ascii_
            table[lower] = ascii_
            table.setdefault(lower.upper(), ascii_.capitalize())
    return str.maketrans(table)


_TRANSLITERATION = _transliteration_table()

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_PUNCT_RUN = re.compile(r"[._-]{2,}")
_EDGE_PUNCT = "._-"


def _collapse(run: re.Match[str]) -> str:
    text = run.group(0)
    return text[0] if len(set(text)) == 1 else "-"


def _to_ascii(text: str) -> str:
    # Translate before and after decomposing: 'й' is in the table whole, while accented
    # Greek letters only reach it once NFKD has split off their accents ('ά' -> 'α').
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLITERATION)
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).translate(_TRANSLITERATION)


def _clean(text: str) -> str:
    """Unsafe characters -> '-', punctuation runs -> one character, no punctuation at the ends."""
    text = _UNSAFE.sub("-", text)
    text = _PUNCT_RUN.sub(_collapse, text)
    return text.strip(_EDGE_PUNCT)


def _sanitise_segment(segment: str) -> str:
    # NFKC can turn a file-name character into '/' (U+FF0F): it is part of the name, not a
    # separator, so it must become '-' like any other unsafe character.
    return _clean(_to_ascii(segment))


def _sanitise_name(name: str) -> str:
    """Like a segment, but the extension stays visible even when the stem is unreadable."""
    stem, dot, suffix = name.rpartition(".")
    if not (dot and stem and suffix):
        return _sanitise_segment(name)
    clean_suffix = _sanitise_segment(suffix)
    clean_stem = _sanitise_segment(stem) or "image"
    return f"{clean_stem}.{clean_suffix}" if clean_suffix else clean_stem


def _path_hash(relative_path: str) -> str:
    # surrogatepass keeps undecodable POSIX file names (os.fsdecode) distinct and hashable.
    raw = relative_path.encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()[:_HASH_LENGTH]


def _shorten(body: str, budget: int) -> str:
    """Keep the start (top folder) and the end (file name) of an over-long key."""
    if len(body) <= budget:
        return body
    head = body[:16].rstrip(_EDGE_PUNCT)
    tail = body[-(budget - 17) :].lstrip(_EDGE_PUNCT)
    return f"{head}-{tail}"


def partition_key_for(relative_path: str) -> str:
    """The Dagster partition key for an image path ('/'-separated, relative to its source).

    Each path segment is NFKC-normalised and transliterated to ASCII where possible; any
    character outside ``[A-Za-z0-9._-]`` becomes '-'; runs of ``._-`` collapse to one
    character; segments lose leading/trailing punctuation; empty segments are dropped; the
    segments are joined with '__'. If that changed anything, or the key would be longer than
    :data:`MAX_KEY_LENGTH`, the key is lossy: it is shortened and ends with ``--`` plus 12 hex
    digits of sha256 of the original path. A lossless key never contains ``--``, so lossless
    and lossy keys cannot meet, and lossy keys differ whenever their paths do.

    Every key matches ``[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?``: safe in URLs, shell
    arguments and file names, valid as a strict Dagster tag value, and free of the substrings
    Dagster rejects in partition keys ('...', control characters) and of the characters
    multi-partition keys reserve ('|', ',', '[', ']'). Case is kept: 'A.png' and 'a.png' are
    two keys.
    """
    if not relative_path:
        raise ValueError("cannot make a partition key from an empty path")
    *folders, name = relative_path.split("/")
    segments = [s for s in (*map(_sanitise_segment, folders), _sanitise_name(name)) if s]
    body = _PATH_SEPARATOR.join(segments)
    if "/".join(segments) == relative_path and len(body) <= MAX_KEY_LENGTH:
        return body
    budget = MAX_KEY_LENGTH - len(_LOSSY_MARK) - _HASH_LENGTH
    body = _shorten(body, budget) or "image"
    return f"{body}{_LOSSY_MARK}{_path_hash(relative_path)}"


def partition_keys_for(relative_paths: Iterable[str]) -> dict[str, str]:
    """Map each relative path to its partition key; raise if two paths ever share a key."""
    keys: dict[str, str] = {}
    owners: dict[str, str] = {}
    for path in relative_paths:
        if path in keys:
            continue
        key = partition_key_for(path)
        other = owners.setdefault(key, path)
        if other != path:
            raise PartitionKeyCollisionError(
                f"paths {other!r} and {path!r} both map to partition key {key!r}; "
                "rename one of them and report this as a bug in hunyuan_assets.core.sources"
            )
        keys[path] = key
    return keys


def is_image_path(relative_path: str) -> bool:
    """True for an image suffix outside hidden/metadata folders and not a temp or lock file."""
    parts = PurePosixPath(relative_path).parts
    if not parts:
        return False
    *dirs, name = parts
    if any(_is_ignored_dir(d) for d in dirs):
        return False
    return _is_image_name(name)


def _is_ignored_dir(name: str) -> bool:
    return name.startswith(".") or name.lower() in _IGNORED_DIR_NAMES


def _is_image_name(name: str) -> bool:
    if name.startswith(_TEMP_PREFIXES):
        return False
    return os.path.splitext(name.lower())[1] in IMAGE_SUFFIXES


# ---------------------------------------------------------------------------------------
# Image validation
# ---------------------------------------------------------------------------------------


def describe_image(data: bytes | bytearray | memoryview) -> ImageInfo:
    """Decode the bytes fully and describe them; raise InvalidImageError if they are unusable.

    Runs Pillow's structural check (``verify``: chunk CRCs, headers) and then a full decode
    (``load``), which is what catches truncated files.
    """
    data = bytes(data)
    if not data:
        raise InvalidImageError("empty data: 0 bytes is not an image")
    digest = hashlib.sha256(data).hexdigest()
    expected = ", ".join(sorted(IMAGE_FORMATS))
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (width, height) = im.format, im.size
    except UnidentifiedImageError:
        if (sniffed := _sniff(data)) != "image":  # the right magic, then garbage or nothing
            raise InvalidImageError(
                f"corrupt or truncated {sniffed} header ({len(data)} bytes)"
            ) from None
        raise InvalidImageError(
            f"not a recognised image: {len(data)} bytes starting {data[:12]!r}; expected {expected}"
        ) from None
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"image is too large to decode safely: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for broken headers
        raise InvalidImageError(
            f"corrupt or truncated {_sniff(data)} header ({len(data)} bytes): {exc}"
        ) from exc
    if fmt not in IMAGE_FORMATS:
        raise InvalidImageError(f"unsupported image format {fmt}; expected {expected}")
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"{fmt} image has no pixels ({width}x{height})")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"image is too large to decode safely: {exc}") from exc
    except Exception as exc:  # OSError, SyntaxError, zlib.error, struct.error, ...
        raise InvalidImageError(
            f"corrupt or truncated {fmt} image ({len(data)} bytes, {width}x{height}): {exc}"
        ) from exc
    return ImageInfo(sha256=digest, size=len(data), width=width, height=height, format=fmt)


def _sniff(data: bytes) -> str:
    """Name the format from its magic bytes, for messages about files Pillow cannot open."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return "image"


# ---------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------


class ImageSource(abc.ABC):
    """A place that holds input images: list them, read them, maybe hand out a URL."""

    @property
    @abc.abstractmethod
    def uri(self) -> str:
        """Where this source points (file:// or s3:// URI)."""

    @abc.abstractmethod
    def list_images(self) -> list[ImageRef]:
        """All images, sorted by relative path, with stable partition keys."""

    @abc.abstractmethod
    def read_bytes(self, ref: ImageRef) -> bytes:
        """The image's current bytes."""

    @abc.abstractmethod
    def image_url(self, ref: ImageRef) -> str | None:
        """A URL the WaveSpeed API can fetch, or None when the bytes must be uploaded."""

    @staticmethod
    def _refs(found: list[tuple[str, str, int, str]]) -> list[ImageRef]:
        found.sort(key=lambda item: item[0])
        keys = partition_keys_for(path for path, _, _, _ in found)
        return [
            ImageRef(keys[path], path, uri, size, fingerprint)
            for path, uri, size, fingerprint in found
        ]


class FolderImageSource(ImageSource):
    """Images under a local folder, recursively; symlinked folders are not followed."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"FolderImageSource({str(self.root)!r})"

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def list_images(self) -> list[ImageRef]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a folder")
        found: list[tuple[str, str, int, str]] = []
        for path, stat in self._walk(self.root, ""):
            found.append(
                (path, (self.root / path).as_uri(), stat.st_size, _local_fingerprint(stat))
            )
        return self._refs(found)

    def _walk(self, folder: Path, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            if folder == self.root:
                raise
            return  # a subfolder removed or unreadable while we walked: not there now
        for entry in entries:
            relative = f"{prefix}{entry.name}"
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not _is_ignored_dir(entry.name):
                        yield from self._walk(Path(entry.path), relative + "/")
                elif _is_image_name(entry.name) and entry.is_file():
                    yield relative, entry.stat()
            except OSError:
                continue  # deleted between listing and stat, or a symlink loop

    def _path(self, ref: ImageRef) -> Path:
        parts = PurePosixPath(ref.relative_path).parts
        if not parts or ref.relative_path.startswith("/") or ".." in parts:
            raise ValueError(f"{ref.relative_path!r} is not a path inside {self.root}")
        return self.root.joinpath(*parts)

    def read_bytes(self, ref: ImageRef) -> bytes:
        return self._path(ref).read_bytes()

    def image_url(self, ref: ImageRef) -> str | None:
        return None


def _local_fingerprint(stat: os.stat_result) -> str:
    return f"{stat.st_size}-{stat.st_mtime_ns}"


class S3ImageSource(ImageSource):
    """Images under an S3 prefix (treated as a folder); URLs are presigned GETs.

    ``client`` is a boto3 S3 client, e.g. ``S3Resource(...).get_client()``. The presigned URL
    must be reachable by WaveSpeed, so this suits real S3 (or an endpoint the API can see).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        url_expiry: int = DEFAULT_URL_EXPIRY,
    ) -> None:
        if not bucket:
            raise ValueError("S3ImageSource needs a bucket name")
        self.client = client
        self.bucket = bucket
        # 'images' and 'images/' mean the same folder, and never match 'images2/...'.
        stripped = prefix.strip("/")
        self.prefix = f"{stripped}/" if stripped else ""
        self.url_expiry = _check_expiry(url_expiry)

    def __repr__(self) -> str:
        return f"S3ImageSource(bucket={self.bucket!r}, prefix={self.prefix!r})"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def list_images(self) -> list[ImageRef]:
        found: list[tuple[str, str, int, str]] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                relative = key[len(self.prefix) :]
                if key.endswith("/") or not is_image_path(relative):
                    continue
                etag = str(obj.get("ETag", "")).strip('"')
                found.append((relative, f"s3://{self.bucket}/{key}", int(obj["Size"]), etag))
        return self._refs(found)

    def _key(self, ref: ImageRef) -> str:
        return self.prefix + ref.relative_path

    def read_bytes(self, ref: ImageRef) -> bytes:
        response = self.client.get_object(Bucket=self.bucket, Key=self._key(ref))
        with response["Body"] as body:
            return body.read()

    def image_url(self, ref: ImageRef, *, expires_in: int | None = None) -> str:
        expiry = self.url_expiry if expires_in is None else _check_expiry(expires_in)
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._key(ref)},
            ExpiresIn=expiry,
        )


def _check_expiry(seconds: int) -> int:
    if not 1 <= seconds <= _MAX_URL_EXPIRY:
        raise ValueError(f"presigned URL expiry must be 1..{_MAX_URL_EXPIRY} s, got {seconds}")
    return seconds


def open_image_source(
    spec: str | os.PathLike[str],
    *,
    s3_client: Any = None,
    url_expiry: int = DEFAULT_URL_EXPIRY,
) -> ImageSource:
    """A source from ``s3://bucket/prefix``, a ``file://`` URI or a folder path."""
    text = os.fspath(spec)
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"{text!r} has no bucket; expected s3://bucket/prefix")
        if s3_client is None:
            raise ValueError(
                f"{text!r} needs an S3 client: pass s3_client=S3Resource(...).get_client()"
            )
        return S3ImageSource(s3_client, bucket, prefix, url_expiry=url_expiry)
    if text.startswith("file://"):
        parsed = urllib.parse.urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{text!r}: only local file:// URIs are supported")
        return FolderImageSource(urllib.request.url2pathname(parsed.path))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", text):
        raise ValueError(f"unsupported image source {text!r}; use a folder or s3://bucket/prefix")
    return FolderImageSource(text)
