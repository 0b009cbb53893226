"""Register images: content identity (sha256, size, format) and a URL the API can fetch.

Two ways to a URL:

- upload (WaveSpeed's media upload): local files, and images in a format the API cannot read
  (TIFF, GIF, BMP, from S3 too), which are converted to PNG first. What is uploaded is the
  bytes that were validated (or the PNG made from them), staged in a private temporary file,
  so a file changed or swapped for a symbolic link after validation is never what goes out.
  The provider keeps uploads 7 days; the registration says when to upload again.
- presigned GET (other S3 objects): the URL is a bearer credential for the object, so it is
  short-lived (``presign_expiry``, 1 h by default) and the registration carries its deadline;
  a caller that submits later signs again with :func:`presigned_url` (no read, no upload).

The content identity is always the sha256 of the bytes as stored, never of a converted PNG.
Messages never quote a file's bytes (see :mod:`hunyuan_assets.core.sources`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Literal

from hunyuan_assets.client import AsyncHunyuan3DClient, WaveSpeedError
from hunyuan_assets.core.sources import (
    ImageInfo,
    ImageReadError,
    ImageRef,
    ImageSource,
    ImageUpload,
    InvalidImageError,
    prepare_upload,
)

__all__ = [
    "DEFAULT_PRESIGN_EXPIRY",
    "UPLOAD_URL_LIFETIME",
    "PresignedUrl",
    "Registration",
    "presigned_url",
    "register_image",
    "register_images",
]

# Provider retention is 7 days; renew a day early so a slow backfill never submits a dead URL.
UPLOAD_URL_LIFETIME = timedelta(days=6)
# Long enough for a registration and an immediate submit; sign again for later submits.
DEFAULT_PRESIGN_EXPIRY = timedelta(hours=1)
_MAX_PRESIGN_EXPIRY = timedelta(days=7)  # the SigV4 limit

UrlKind = Literal["presigned", "upload"]


@dataclass(frozen=True)
class Registration:
    ref: ImageRef
    info: ImageInfo | None = None
    image_url: str | None = None
    url_expires_at: datetime | None = None
    error: str | None = None
    transient: bool = False
    content_sha256: str | None = None  # of the raw bytes, even when they do not decode
    # How to renew the URL: "presigned" -> presigned_url() again; "upload" -> register again.
    url_kind: UrlKind | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def converted(self) -> bool:
        """True when a PNG made from the image was uploaded instead of its own bytes."""
        return self.info is not None and self.info.needs_conversion


@dataclass(frozen=True)
class PresignedUrl:
    url: str
    expires_at: datetime  # taken before signing, so never later than the real deadline


def presigned_url(
    source: ImageSource, ref: ImageRef, expiry: timedelta = DEFAULT_PRESIGN_EXPIRY
) -> PresignedUrl | None:
    """A fresh presigned URL for ``ref``, or None for a source that has none (a folder).

    For registrations whose ``url_kind`` is "presigned" only: an image that needs conversion
    must be uploaded (the API cannot read the stored format).
    """
    seconds = _presign_seconds(expiry)
    expires_at = datetime.now(UTC) + timedelta(seconds=seconds)
    url = source.image_url(ref, expires_in=seconds)
    return PresignedUrl(url, expires_at) if url else None


def _presign_seconds(expiry: timedelta) -> int:
    if not timedelta(seconds=1) <= expiry <= _MAX_PRESIGN_EXPIRY:
        raise ValueError(f"presign_expiry must be between 1 s and 7 days, got {expiry}")
    return int(expiry.total_seconds())


async def register_images(
    source: ImageSource,
    refs: Sequence[ImageRef],
    client: AsyncHunyuan3DClient,
    max_concurrency: int = 4,
    *,
    presign_expiry: timedelta = DEFAULT_PRESIGN_EXPIRY,
) -> list[Registration]:
    """Hash, validate and make reachable every image; one bad image never stops the others.

    ``presign_expiry`` is the lifetime of presigned S3 URLs (1 s to 7 days); it overrides the
    source's own ``url_expiry``.
    """
    _presign_seconds(presign_expiry)  # a bad setting fails the call, not every image
    slots = asyncio.Semaphore(max_concurrency)

    async def one(ref: ImageRef) -> Registration:
        async with slots:
            return await register_image(source, ref, client, presign_expiry=presign_expiry)

    return list(await asyncio.gather(*(one(ref) for ref in refs)))


async def register_image(
    source: ImageSource,
    ref: ImageRef,
    client: AsyncHunyuan3DClient,
    *,
    presign_expiry: timedelta = DEFAULT_PRESIGN_EXPIRY,
) -> Registration:
    """One image: read, hash, validate, then upload it (converted when needed) or presign its
    URL; never raises for a bad image or a failed upload (the Registration says what went
    wrong). ``presign_expiry`` as for :func:`register_images`."""
    _presign_seconds(presign_expiry)
    # Read, hash, validate and sign in one trip to a thread: the sha256 of a large picture
    # would hold the event loop, and each trip costs the loop a wake-up.
    staged = await asyncio.to_thread(_stage, source, ref, presign_expiry)
    if isinstance(staged, Registration):
        return staged
    upload, presigned = staged
    info = upload.info
    if presigned is not None:
        return Registration(ref, info, presigned.url, presigned.expires_at, url_kind="presigned")
    now = datetime.now(UTC)
    try:
        url = await _upload(client, upload.payload, _upload_name(ref, upload.converted))
    except WaveSpeedError as exc:
        return Registration(
            ref,
            info,
            error=f"upload failed: {exc}",
            transient=exc.transient,
            content_sha256=info.sha256,
        )
    except OSError as exc:  # the temporary copy could not be written (disk full, ...)
        return Registration(
            ref,
            info,
            error=f"upload failed: could not stage the file for upload: {exc}",
            transient=True,
            content_sha256=info.sha256,
        )
    return Registration(ref, info, url, now + UPLOAD_URL_LIFETIME, url_kind="upload")


def _stage(
    source: ImageSource, ref: ImageRef, presign_expiry: timedelta
) -> tuple[ImageUpload, PresignedUrl | None] | Registration:
    """What `register_image` does before the network: the validated upload and, for an
    image the API can read as stored, its presigned URL (None: a folder); or the failed
    Registration, which says why."""
    try:
        data = source.read_bytes(ref)
    except ImageReadError as exc:  # the message names the file and why it was not read
        return Registration(ref=ref, error=str(exc))
    except OSError as exc:
        return Registration(
            ref=ref,
            error=f"{ref.relative_path} could not be read: {exc}",
            transient=isinstance(exc, ConnectionError | TimeoutError),
        )
    raw_sha256 = hashlib.sha256(data).hexdigest()
    try:
        upload = prepare_upload(data)
    except InvalidImageError as exc:
        return Registration(ref=ref, error=f"{ref.relative_path}: {exc}", content_sha256=raw_sha256)
    if upload.converted:
        return upload, None
    try:
        return upload, presigned_url(source, ref, presign_expiry)
    except OSError as exc:
        return Registration(ref, upload.info, error=str(exc), content_sha256=upload.info.sha256)


async def _upload(client: AsyncHunyuan3DClient, payload: bytes, name: str) -> str:
    # The validated bytes themselves, from memory: what was checked is what is sent.
    return await client.upload_bytes(payload, name)


def _upload_name(ref: ImageRef, converted: bool) -> str:
    """The file name the provider sees: the image's own, with '.png' when converted."""
    stem, suffix = os.path.splitext(PurePosixPath(ref.relative_path).name)
    if converted:
        suffix = ".png"
    if not stem or "\0" in stem or len(os.fsencode(stem + suffix)) > 200:
        stem = "image"  # S3 keys may be longer than a local file name can be
    return stem + suffix
