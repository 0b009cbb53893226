"""Where input images come from (a folder or an S3 prefix) and the partition key of each.

No Dagster here: the S3 source takes a boto3 client, which in production comes from
dagster-aws's ``S3Resource.get_client()``.

Partition keys are a pure function of an image's path relative to its source, so a key
never changes when other files come or go. The rules (see :func:`partition_key_for`) are
frozen: changing any of them re-keys existing partitions, which would orphan their history.

What a source lists (:meth:`ImageSource.scan`):

- images: files with an image suffix, at most :data:`MAX_IMAGE_BYTES`. PNG, JPEG and WEBP are
  sent as they are; TIFF, GIF and BMP are converted to PNG before upload (the API cannot read
  them). The bytes decide the format, not the suffix; the content identity is always the
  sha256 of the file as stored, never of the converted PNG.
- skipped files, each with a reason: any other file, unsupported image types, files over the
  size limit, anything that is not a regular file, symbolic links that are broken, loop,
  lead out of the folder or to a folder, and S3 keys with a '.' or '..' folder.
- silently ignored, by design: hidden files and folders (a leading '.', e.g. ``.DS_Store``),
  lock and temp files (``~$x.png``, ``#x.png#``, rsync's ``.x.png.Ab12Cd``), Windows
  thumbnail caches (``Thumbs.db``, ``desktop.ini``), the metadata folders of sync tools and
  NAS boxes (``__MACOSX``, ``@eaDir``, ``$RECYCLE.BIN``), and S3 folder markers (keys ending
  in '/').

Symbolic links (folder source): a link to a regular file inside the folder is followed and
listed under the link's own name (it is then the same picture twice, which the content
identity handles). Every other link is reported and never read: broken links, loops, links
that lead out of the folder (even through other links) and links to folders, which are never
followed. Reads re-check this at read time and open each path component without following
links, so a link swapped in after the listing cannot lead a read out of the folder.

Errors never quote a file's bytes: they name what kind of data it is (text, HTML, a PDF, a
truncated PNG, ...), its size and, for images, its dimensions.
"""

from __future__ import annotations

import abc
import errno
import hashlib
import io
import os
import re
import stat
import threading
import unicodedata
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image, ImageOps, UnidentifiedImageError

from hunyuan_assets.client import MAX_UPLOAD_BYTES

__all__ = [
    "CONVERTED_FORMATS",
    "CONVERTED_SUFFIXES",
    "IMAGE_FORMATS",
    "IMAGE_SUFFIXES",
    "DEFAULT_URL_EXPIRY",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_KEY_LENGTH",
    "SAMPLES_DIR",
    "FolderImageSource",
    "ImageInfo",
    "ImageListing",
    "ImageReadError",
    "ImageRef",
    "ImageSource",
    "ImageTooLargeError",
    "ImageUpload",
    "InvalidImageError",
    "PartitionKeyCollisionError",
    "S3ImageSource",
    "SkippedFile",
    "describe_image",
    "is_image_path",
    "open_image_source",
    "partition_key_for",
    "partition_keys_for",
    "prepare_upload",
]

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})  # sent as they are
CONVERTED_SUFFIXES = frozenset({".tif", ".tiff", ".gif", ".bmp"})  # converted to PNG first
# What the API reads as it is. MPO is what cameras write for a JPEG with extra pictures
# appended (Pillow names it so); every JPEG decoder reads its first picture.
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP"})
CONVERTED_FORMATS = frozenset({"TIFF", "GIF", "BMP"})  # the first frame or page, as PNG
# The only Pillow plugins ever shown untrusted bytes: fewer parsers exposed, and none that
# hands the file to another program (EPS runs Ghostscript).
_DECODERS = ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP")
# Image types people have that we do not read: named in the skip reason, not called junk.
_UNSUPPORTED_IMAGE_SUFFIXES = frozenset(
    ".heic .heif .avif .jxl .jp2 .j2k .svg .psd .ico .tga .ppm .pgm .pbm .pnm .exr .hdr"
    " .raw .dng .cr2 .cr3 .nef .arw .orf .rw2 .raf".split()
)

# The provider's upload limit. A larger file is never read into memory: sources check the
# size (stat, S3 listing and GET headers) first.
MAX_IMAGE_BYTES = MAX_UPLOAD_BYTES
# The model works on a 512 px crop, so nothing is lost below this; above it an image is
# refused from its header before any pixel is decoded (decoding 8192 x 8192 RGBA takes
# 256 MiB). Also below Pillow's own DecompressionBombWarning threshold (~89.5 MP).
MAX_IMAGE_PIXELS = 8192 * 8192

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
_IGNORED_FILE_NAMES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})

DEFAULT_URL_EXPIRY = 3600
_MAX_URL_EXPIRY = 7 * 24 * 3600  # the SigV4 limit for presigned URLs


class InvalidImageError(ValueError):
    """The bytes are not a usable image; the message says what is wrong (never quoting them)."""


class ImageReadError(OSError):
    """A source refused to read a file: a symbolic link out of the folder, broken or looping,
    not a regular file, or over :data:`MAX_IMAGE_BYTES`. The message names the file and why.

    An OSError, so callers that treat an unreadable file as gone (the sensor) keep working.
    """


class ImageTooLargeError(ImageReadError):
    """The file is over :data:`MAX_IMAGE_BYTES`; it was not read."""


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
    """What the decoded bytes are: content identity (sha256 of the bytes as stored),
    dimensions, format (as Pillow names it: PNG, JPEG, MPO, WEBP, TIFF, GIF, BMP)."""

    sha256: str
    size: int
    width: int
    height: int
    format: str

    @property
    def needs_conversion(self) -> bool:
        """True when the API cannot read this format and a PNG is uploaded instead."""
        return self.format not in IMAGE_FORMATS


@dataclass(frozen=True)
class ImageUpload:
    """What to send for one image: its bytes, or a PNG of its first frame (``converted``)."""

    info: ImageInfo  # of the bytes as stored: the content identity never changes
    payload: bytes

    @property
    def converted(self) -> bool:
        return self.info.needs_conversion


class SkippedFile(NamedTuple):
    """A file a listing did not take, and why (for tick logs and the demo's output)."""

    relative_path: str
    reason: str


@dataclass(frozen=True)
class ImageListing:
    """One listing of a source: the images, and the files it skipped, both sorted by path."""

    images: list[ImageRef]
    skipped: list[SkippedFile]


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
    """True for an image suffix (sent as is or converted) outside hidden/metadata folders,
    and not a hidden, temp or lock file."""
    parts = PurePosixPath(relative_path).parts
    if not parts:
        return False
    *dirs, name = parts
    if any(_is_ignored_dir(d) for d in dirs):
        return False
    return not _is_ignored_name(name) and _suffix_problem(name) is None


def _is_ignored_dir(name: str) -> bool:
    return name.startswith(".") or name.lower() in _IGNORED_DIR_NAMES


def _is_ignored_name(name: str) -> bool:
    """Hidden, temp and lock files and OS thumbnail caches: ignored without a report."""
    return name.startswith(_TEMP_PREFIXES) or name.lower() in _IGNORED_FILE_NAMES


def _suffix_problem(name: str) -> str | None:
    """Why a file name is not an image we take, or None."""
    suffix = os.path.splitext(name.lower())[1]
    if suffix in IMAGE_SUFFIXES or suffix in CONVERTED_SUFFIXES:
        return None
    known = ", ".join(sorted(IMAGE_SUFFIXES | CONVERTED_SUFFIXES))
    if suffix in _UNSUPPORTED_IMAGE_SUFFIXES:
        return f"{suffix} images are not supported (convert to PNG or JPEG; supported: {known})"
    if not suffix:
        return f"not an image: the name has no extension (supported: {known})"
    return f"not an image: {suffix} is not an image type (supported: {known})"


def _size_problem(size: int) -> str | None:
    if size <= MAX_IMAGE_BYTES:
        return None
    return (
        f"{_mib(size)} is over the {_mib(MAX_IMAGE_BYTES)} upload limit; not read "
        "(downscale or recompress it)"
    )


def _mib(size: int) -> str:
    if size < 2**20:
        return f"{size:,} bytes"
    if size % 2**20 == 0:
        return f"{size // 2**20} MiB"
    return f"{size / 2**20:.1f} MiB ({size:,} bytes)"


# ---------------------------------------------------------------------------------------
# Image validation
# ---------------------------------------------------------------------------------------

# warnings.catch_warnings swaps process-wide state (Python 3.11), so concurrent uses would
# undo each other's filters: decodes take turns. That also caps memory at one decode.
_PILLOW_TURN = threading.Lock()


def describe_image(data: bytes | bytearray | memoryview) -> ImageInfo:
    """Decode the bytes and describe them; raise InvalidImageError if they are unusable.

    Refuses more than :data:`MAX_IMAGE_BYTES` or :data:`MAX_IMAGE_PIXELS` (the pixel count is
    read from the header, before any pixel is decoded); then runs Pillow's structural check
    (``verify``: chunk CRCs, headers) and a decode of all the data (``load``), which is what
    catches truncated files: JPEG at 1/8 scale (every block is still read), the others in
    full. Only the first frame or page of GIF and TIFF is decoded. Pillow warnings
    (decompression bombs among them) are never printed: a bomb is an error.
    """
    return _inspect(data, to_png=False)[0]


def prepare_upload(data: bytes | bytearray | memoryview) -> ImageUpload:
    """Validate like :func:`describe_image` and return what to upload: the bytes themselves
    for PNG, JPEG and WEBP; for TIFF, GIF and BMP a PNG of the first frame or page, turned
    upright by its EXIF orientation, in a mode PNG holds (else RGB, or RGBA with alpha)."""
    info, png = _inspect(data, to_png=True)
    return ImageUpload(info, bytes(data) if png is None else png)


def _inspect(
    data: bytes | bytearray | memoryview, *, to_png: bool
) -> tuple[ImageInfo, bytes | None]:
    data = bytes(data)
    if not data:
        raise InvalidImageError("empty data: 0 bytes is not an image")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidImageError(f"{_mib(len(data))} is over the {_mib(MAX_IMAGE_BYTES)} limit")
    digest = hashlib.sha256(data).hexdigest()
    with _PILLOW_TURN, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's warnings are about the file: we say it all
        fmt, width, height = _read_header(data)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        png = _decode(data, fmt, width, height, to_png)
    return ImageInfo(digest, len(data), width, height, fmt), png


def _expected() -> str:
    return (
        f"expected {', '.join(sorted(IMAGE_FORMATS - {'MPO'}))}, "
        f"or {', '.join(sorted(CONVERTED_FORMATS))} (converted to PNG)"
    )


def _read_header(data: bytes) -> tuple[str, int, int]:
    try:
        with Image.open(io.BytesIO(data), formats=_DECODERS) as im:
            fmt, (width, height) = im.format or "", im.size
    except UnidentifiedImageError:
        magic = _image_magic(data)
        if magic in _DECODERS:  # the right magic, then garbage or nothing
            raise InvalidImageError(
                f"corrupt or truncated {magic} header ({len(data)} bytes)"
            ) from None
        if magic is not None:
            raise InvalidImageError(
                f"unsupported image format {magic} ({len(data)} bytes); {_expected()}"
            ) from None
        raise InvalidImageError(
            f"not a recognised image: {len(data)} bytes of {_data_kind(data)}; {_expected()}"
        ) from None
    except Image.DecompressionBombError:
        raise InvalidImageError(_too_many_pixels(None)) from None
    except Exception:  # Pillow raises many types for broken headers; their text may quote bytes
        magic = _image_magic(data) or "image"
        raise InvalidImageError(
            f"corrupt or truncated {magic} header ({len(data)} bytes)"
        ) from None
    if fmt not in IMAGE_FORMATS | CONVERTED_FORMATS:
        raise InvalidImageError(f"unsupported image format {fmt}; {_expected()}")
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"{fmt} image has no pixels ({width}x{height})")
    if width * height > _pixel_limit():
        raise InvalidImageError(_too_many_pixels((width, height)))
    return fmt, width, height


def _pixel_limit() -> int:
    # A lower limit set in Pillow by the application wins (Pillow would warn below ours).
    pillow = Image.MAX_IMAGE_PIXELS
    return MAX_IMAGE_PIXELS if pillow is None else min(MAX_IMAGE_PIXELS, pillow)


def _too_many_pixels(size: tuple[int, int] | None) -> str:
    limit = _pixel_limit()
    side = int(limit**0.5)
    if size is None:  # Pillow refused it before telling us its size
        pillow = Image.MAX_IMAGE_PIXELS or 0
        found = f"image has more than {2 * pillow / 1e6:.1f} megapixels"
    else:
        found = f"image is {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.1f} megapixels)"
    return (
        f"{found}, over the limit of {limit / 1e6:.1f} megapixels ({side}x{side}); "
        "not decoded: downscale it (the model works on a 512 px crop)"
    )


def _decode(data: bytes, fmt: str, width: int, height: int, to_png: bool) -> bytes | None:
    shape = f"{len(data)} bytes, {width}x{height}"
    try:
        with Image.open(io.BytesIO(data), formats=_DECODERS) as im:
            im.verify()
        with Image.open(io.BytesIO(data), formats=_DECODERS) as im:
            scaled = fmt in _DCT_SCALED and _at_an_eighth(im, width, height)
            im.load()
            if not scaled and im.size != (width, height):  # a GIF frame may grow the canvas
                raise InvalidImageError(_too_many_pixels(im.size))
            if not (to_png and fmt in CONVERTED_FORMATS):
                return None
            png = _to_png(im)
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImageError(_too_many_pixels(None)) from None
    except Exception as exc:  # OSError, SyntaxError, zlib.error, struct.error, ...
        raise InvalidImageError(f"{_decode_problem(exc, fmt)} ({shape})") from None
    if len(png) > MAX_IMAGE_BYTES:
        raise InvalidImageError(
            f"the PNG made from this {fmt} image is {_mib(len(png))}, over the "
            f"{_mib(MAX_IMAGE_BYTES)} upload limit ({shape})"
        )
    return png


# JPEG is checked at 1/8 scale (libjpeg's DCT scaling): every entropy-coded block is still
# read, so a truncated or broken stream fails as at full size, but no inverse DCT or colour
# conversion is done: ~0.5x the CPU (bench_inputs.py: a 12 MP JPEG 30 -> 14 ms; a noisy one,
# 5.7 MB, 95 -> 50 ms). What is uploaded is the original bytes either way.
_DCT_SCALED = frozenset({"JPEG", "MPO"})


def _at_an_eighth(im: Image.Image, width: int, height: int) -> bool:
    """Ask the decoder for 1/8 of the size; whether it will (one tile, no earlier draft)."""
    return im.draft(im.mode, (max(1, width // 8), max(1, height // 8))) is not None


def _decode_problem(exc: Exception, fmt: str) -> str:
    """Pillow's message in our words: its own text can quote the file (chunk names, tags)."""
    text = str(exc).lower()
    if "truncat" in text or isinstance(exc, EOFError):
        return f"truncated {fmt} image: the data ends early"
    if "crc" in text or "checksum" in text:
        return f"corrupt {fmt} image: a checksum does not match"
    return f"corrupt or truncated {fmt} image: it does not decode ({type(exc).__name__})"


_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "P", "RGB", "RGBA"})


def _to_png(im: Image.Image) -> bytes:
    frame = im
    if im.getexif().get(0x0112, 1) != 1:  # EXIF Orientation: PNG would lose it
        frame = ImageOps.exif_transpose(im)
    if frame.mode not in _PNG_MODES:  # CMYK, YCbCr, PA, F, ...
        frame = frame.convert("RGBA" if frame.has_transparency_data else "RGB")
    buffer = io.BytesIO()
    frame.save(buffer, "PNG")
    return buffer.getvalue()


def _image_magic(data: bytes) -> str | None:
    """The image format its first bytes claim, for messages (Pillow decides what decodes)."""
    head = data[:32]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:2] == b"BM":
        return "BMP"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIF"
    if head[:4] == b"8BPS":
        return "PSD"
    if head[:4] == b"\x00\x00\x01\x00":
        return "ICO"
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "JPEG XL"
    return None


def _data_kind(data: bytes) -> str:
    """What kind of data this is, in words, without quoting any of it."""
    head = data[:1024]
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive (or an Office document)"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    if not _looks_like_text(data[:4096]):
        return "binary data"
    stripped = head.lstrip().lower()
    if b"<svg" in stripped:
        return "SVG (vector image) text"
    if stripped.startswith(b"<"):
        return "HTML or XML text"
    if stripped.startswith((b"{", b"[")):
        return "JSON-like text"
    return "text"


def _looks_like_text(sample: bytes) -> bool:
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 3:  # not just a character cut at the sample's end
            return False
    controls = sum(1 for b in sample if (b < 32 and b not in b"\t\n\r\f") or b == 127)
    return controls == 0


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
    def scan(self) -> ImageListing:
        """All images, sorted by relative path, with stable partition keys, and every file
        skipped with its reason (see the module docstring for what is ignored instead)."""

    def list_images(self) -> list[ImageRef]:
        """The images of :meth:`scan`."""
        return self.scan().images

    @abc.abstractmethod
    def read_bytes(self, ref: ImageRef) -> bytes:
        """The image's current bytes; ImageReadError (an OSError) when it refuses to read."""

    @abc.abstractmethod
    def image_url(self, ref: ImageRef, *, expires_in: int | None = None) -> str | None:
        """A URL the WaveSpeed API can fetch, valid ``expires_in`` seconds, or None when the
        bytes must be uploaded."""

    @staticmethod
    def _refs(found: list[tuple[str, str, int, str]]) -> list[ImageRef]:
        found.sort(key=lambda item: item[0])
        keys = partition_keys_for(path for path, _, _, _ in found)
        return [
            ImageRef(keys[path], path, uri, size, fingerprint)
            for path, uri, size, fingerprint in found
        ]


class FolderImageSource(ImageSource):
    """Images under a local folder, recursively; symbolic links as the module docstring says."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"FolderImageSource({str(self.root)!r})"

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def scan(self) -> ImageListing:
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a folder")
        found: list[tuple[str, str, int, str]] = []
        skipped: list[SkippedFile] = []
        self._walk(self.root, "", found, skipped)
        return ImageListing(self._refs(found), sorted(skipped))

    def _walk(
        self,
        folder: Path,
        prefix: str,
        found: list[tuple[str, str, int, str]],
        skipped: list[SkippedFile],
    ) -> None:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            if folder == self.root:
                raise
            return  # removed while we walked: not there now
        except OSError as exc:
            if folder == self.root:
                raise
            skipped.append(SkippedFile(prefix, f"folder could not be read: {exc.strerror}"))
            return
        for entry in entries:
            relative = f"{prefix}{entry.name}"
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not _is_ignored_dir(entry.name):
                        self._walk(Path(entry.path), relative + "/", found, skipped)
                    continue
                if _is_ignored_name(entry.name):
                    continue
                problem = self._link_problem(entry) if entry.is_symlink() else None
                if problem is None and not entry.is_file():
                    problem = f"not a regular file ({_file_kind(entry.stat().st_mode)}); not read"
                if problem is None:
                    size = entry.stat().st_size  # of the target, for a link inside the folder
                    problem = _suffix_problem(entry.name) or _size_problem(size)
                if problem is not None:
                    skipped.append(SkippedFile(relative, problem))
                    continue
                info = entry.stat()
                uri = (self.root / relative).as_uri()
                found.append((relative, uri, info.st_size, _local_fingerprint(info)))
            except FileNotFoundError:
                continue  # deleted between the listing and the stat
            except OSError as exc:
                skipped.append(SkippedFile(relative, f"could not be examined: {exc.strerror}"))

    def _link_problem(self, entry: os.DirEntry[str]) -> str | None:
        """Why a symbolic link is not followed, or None for a link to a file in the folder."""
        try:
            target = Path(os.path.realpath(entry.path, strict=True))
        except FileNotFoundError:
            return "broken symbolic link: its target does not exist; not read"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "symbolic link loop; not read"
            return f"symbolic link that cannot be resolved ({exc.strerror}); not read"
        if target.is_dir():
            return "symbolic link to a folder; folders are not followed"
        if not target.is_relative_to(self.root):
            return "symbolic link to a file outside the images folder; not followed"
        if not target.is_file():
            return "symbolic link to something that is not a regular file; not read"
        return None

    def _parts(self, ref: ImageRef) -> tuple[str, ...]:
        parts = PurePosixPath(ref.relative_path).parts
        if not parts or ref.relative_path.startswith("/") or ".." in parts:
            raise ValueError(f"{ref.relative_path!r} is not a path inside {self.root}")
        return parts

    def read_bytes(self, ref: ImageRef) -> bytes:
        """The file's bytes, or ImageReadError if it is (now) a link that leads out of the
        folder, is broken or loops, is not a regular file, or is over the size limit (checked
        before reading, and again while reading in case it grows)."""
        relative = ref.relative_path
        link = self.root.joinpath(*self._parts(ref))
        try:
            target = Path(os.path.realpath(link, strict=True))
        except FileNotFoundError:
            if link.is_symlink():
                raise ImageReadError(f"{relative}: broken symbolic link; not read") from None
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ImageReadError(f"{relative}: symbolic link loop; not read") from None
            raise
        if not target.is_relative_to(self.root):
            raise ImageReadError(
                f"{relative}: symbolic link to a file outside the images folder; not read"
            )
        if target == self.root:
            raise ImageReadError(f"{relative}: not a regular file (a folder); not read")
        fd = _open_beneath(self.root, target.relative_to(self.root).parts, relative)
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ImageReadError(
                    f"{relative}: not a regular file ({_file_kind(info.st_mode)}); not read"
                )
            _check_size(relative, info.st_size)
            chunks = [fh.read(info.st_size)]
            total = len(chunks[0])
            while chunk := fh.read(1 << 20):  # it grew since the fstat
                total += len(chunk)
                _check_size(relative, total)
                chunks.append(chunk)
        return b"".join(chunks)

    def image_url(self, ref: ImageRef, *, expires_in: int | None = None) -> str | None:
        return None


def _check_size(relative: str, size: int) -> None:
    if (problem := _size_problem(size)) is not None:
        raise ImageTooLargeError(f"{relative}: {problem}")


def _open_beneath(root: Path, parts: tuple[str, ...], relative: str) -> int:
    """Open root/parts for reading without following a symbolic link at any component, so a
    link swapped in after the realpath check cannot lead out of ``root``. O_NONBLOCK: a FIFO
    put in the file's place must not hang the read (it fails the regular-file check)."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    if not nofollow or os.open not in os.supports_dir_fd:  # Windows: the realpath check only
        return os.open(root.joinpath(*parts), os.O_RDONLY | getattr(os, "O_BINARY", 0))
    flags = os.O_RDONLY | nofollow | os.O_CLOEXEC
    fd = os.open(root, flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):
            raise ImageReadError(
                f"{relative}: became a symbolic link while being read; not read"
            ) from None
        raise
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _local_fingerprint(info: os.stat_result) -> str:
    return f"{info.st_size}-{info.st_mtime_ns}"


class S3ImageSource(ImageSource):
    """Images under an S3 prefix (treated as a folder); URLs are presigned GETs.

    ``client`` is a boto3 S3 client, e.g. ``S3Resource(...).get_client()``. The presigned URL
    must be reachable by WaveSpeed, so this suits real S3 (or an endpoint the API can see).
    Keys may hold any character (spaces, unicode, '+', '%', '#', '?'): they are passed to
    boto3 as they are, which escapes them in requests and presigned URLs.
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

    def scan(self) -> ImageListing:
        found: list[tuple[str, str, int, str]] = []
        skipped: list[SkippedFile] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                relative = key[len(self.prefix) :]
                *dirs, name = relative.split("/")
                if not name:
                    continue  # a folder marker
                if any(d in (".", "..") for d in dirs):
                    # Kept literally by S3, but URL clients (the provider's too) resolve them,
                    # which would fetch another object, maybe one outside the prefix.
                    skipped.append(SkippedFile(relative, _DOT_SEGMENT))
                    continue
                if any(_is_ignored_dir(d) for d in dirs) or _is_ignored_name(name):
                    continue
                size = int(obj["Size"])
                problem = _suffix_problem(name) or _size_problem(size)
                if problem is not None:
                    skipped.append(SkippedFile(relative, problem))
                    continue
                etag = str(obj.get("ETag", "")).strip('"')
                found.append((relative, f"s3://{self.bucket}/{key}", size, etag))
        return ImageListing(self._refs(found), sorted(skipped))

    def _key(self, ref: ImageRef) -> str:
        return self.prefix + ref.relative_path

    def read_bytes(self, ref: ImageRef) -> bytes:
        """The object's bytes. Errors are OSErrors: FileNotFoundError when it is gone,
        ImageTooLargeError (from the GET's headers, before the body is read), ConnectionError
        when S3 could not be reached or throttled (worth retrying), OSError otherwise."""
        key = self._key(ref)
        where = f"s3://{self.bucket}/{key}"
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            with response["Body"] as body:
                _check_size(ref.relative_path, int(response.get("ContentLength") or 0))
                data = body.read(MAX_IMAGE_BYTES + 1)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "unknown"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in ("NoSuchKey", "NotFound", "404"):
                raise FileNotFoundError(f"{where} does not exist (any more)") from None
            if status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout"):
                raise ConnectionError(f"S3 GET {where} failed: {code} (HTTP {status})") from None
            raise OSError(f"S3 GET {where} failed: {code} (HTTP {status})") from None
        except BotoCoreError as exc:  # connection refused, timeouts, a cut-off body
            raise ConnectionError(f"S3 GET {where} failed: {type(exc).__name__}") from None
        _check_size(ref.relative_path, len(data))
        return data

    def image_url(self, ref: ImageRef, *, expires_in: int | None = None) -> str:
        expiry = self.url_expiry if expires_in is None else _check_expiry(expires_in)
        try:
            return self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(ref)},
                ExpiresIn=expiry,
            )
        except BotoCoreError as exc:  # no credentials to sign with, ...
            where = f"s3://{self.bucket}/{self._key(ref)}"
            raise OSError(f"could not presign {where}: {type(exc).__name__}") from None


_DOT_SEGMENT = "the key has a '.' or '..' folder, which URLs resolve to another key; not read"


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
