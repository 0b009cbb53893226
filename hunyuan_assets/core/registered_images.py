"""What `source_images` registered for each partition, kept in the mesh store.

A run that materializes `meshes` alone needs each image's sha256 and the URL the API can fetch;
they are kept here (one small JSON file per pipeline and partition) rather than read back from
Dagster's event log. No Dagster here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from hunyuan_assets.core.registration import Registration
from hunyuan_assets.core.store import MeshStore


@dataclass(frozen=True)
class RegisteredImage:
    partition_key: str
    image_uri: str
    relative_path: str
    sha256: str
    size: int
    width: int
    height: int
    format: str
    fingerprint: str
    image_url: str
    url_expires_at: str | None
    registered_at: str

    @classmethod
    def of(cls, registration: Registration) -> RegisteredImage:
        info, ref = registration.info, registration.ref
        if info is None or not registration.ok:
            raise ValueError("only a successful registration can be kept")
        expires = registration.url_expires_at
        return cls(
            partition_key=ref.partition_key,
            image_uri=ref.uri,
            relative_path=ref.relative_path,
            sha256=info.sha256,
            size=info.size,
            width=info.width,
            height=info.height,
            format=info.format,
            fingerprint=ref.fingerprint,
            image_url=registration.image_url or "",
            url_expires_at=expires.isoformat() if expires else None,
            registered_at=datetime.now(UTC).isoformat(),
        )

    def url_expired(self, now: datetime | None = None) -> bool:
        if not self.image_url or not self.url_expires_at:
            return True
        return datetime.fromisoformat(self.url_expires_at) <= (now or datetime.now(UTC))


class RegisteredImages:
    """`registrations/<pipeline>/<partition key>.json` in the mesh store."""

    def __init__(self, store: MeshStore, pipeline: str) -> None:
        self.store = store
        self.prefix = f"registrations/{quote(pipeline, safe='')}"

    def _key(self, partition_key: str) -> str:
        return f"{self.prefix}/{quote(partition_key, safe='')}.json"

    def put(self, registration: Registration) -> RegisteredImage:
        image = RegisteredImage.of(registration)
        self.store.put_bytes(self._key(image.partition_key), json.dumps(asdict(image)).encode())
        return image

    def get(self, partition_key: str) -> RegisteredImage | None:
        data = self.store.get_bytes(self._key(partition_key))
        if data is None:
            return None
        try:
            return RegisteredImage(**json.loads(data))
        except (ValueError, TypeError):
            return None  # written by another version: treat as not registered

    def get_many(self, partition_keys: Iterable[str]) -> dict[str, RegisteredImage]:
        found = {}
        for key in partition_keys:
            image = self.get(key)
            if image is not None:
                found[key] = image
        return found
