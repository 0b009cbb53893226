"""Register images: content identity (sha256, size, format) and a URL the API can fetch.

Local files go through WaveSpeed's media upload; S3 objects get a presigned URL; the API keeps
uploads for 7 days, so a registration carries the time after which its URL must be renewed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from hunyuan_assets.client import AsyncHunyuan3DClient, WaveSpeedError
from hunyuan_assets.core.sources import (
    ImageInfo,
    ImageRef,
    ImageSource,
    InvalidImageError,
    describe_image,
)

# Provider retention is 7 days; renew a day early so a slow backfill never submits a dead URL.
UPLOAD_URL_LIFETIME = timedelta(days=6)


@dataclass(frozen=True)
class Registration:
    ref: ImageRef
    info: ImageInfo | None = None
    image_url: str | None = None
    url_expires_at: datetime | None = None
    error: str | None = None
    transient: bool = False
    content_sha256: str | None = None  # of the raw bytes, even when they do not decode

    @property
    def ok(self) -> bool:
        return self.error is None


async def register_images(
    source: ImageSource,
    refs: Sequence[ImageRef],
    client: AsyncHunyuan3DClient,
    max_concurrency: int = 4,
) -> list[Registration]:
    """Hash, validate and make reachable every image; one bad image never stops the others."""
    slots = asyncio.Semaphore(max_concurrency)

    async def one(ref: ImageRef) -> Registration:
        async with slots:
            return await register_image(source, ref, client)

    return list(await asyncio.gather(*(one(ref) for ref in refs)))


async def register_image(
    source: ImageSource, ref: ImageRef, client: AsyncHunyuan3DClient
) -> Registration:
    """One image: read, hash, validate, then upload it or presign its URL; never raises for a
    bad image or a failed upload (the Registration says what went wrong)."""
    try:
        data = await asyncio.to_thread(source.read_bytes, ref)
    except OSError as exc:
        return Registration(ref=ref, error=f"{ref.relative_path} could not be read: {exc}")
    raw_sha256 = hashlib.sha256(data).hexdigest()
    try:
        info = describe_image(data)
    except InvalidImageError as exc:
        return Registration(ref=ref, error=f"{ref.relative_path}: {exc}", content_sha256=raw_sha256)
    now = datetime.now(UTC)
    presigned = await asyncio.to_thread(source.image_url, ref)
    if presigned:
        lifetime = timedelta(seconds=getattr(source, "url_expiry", 3600))
        return Registration(ref, info, presigned, now + lifetime)
    local_path = Path(url2pathname(urlparse(ref.uri).path))
    try:
        url = await client.upload(local_path)
    except WaveSpeedError as exc:
        return Registration(
            ref,
            info,
            error=f"upload failed: {exc}",
            transient=exc.transient,
            content_sha256=info.sha256,
        )
    return Registration(ref, info, url, now + UPLOAD_URL_LIFETIME)
