"""Durable prediction records: what was paid for, kept in the mesh store.

A record is written *before* waiting on a prediction, so a crashed or retried run resumes the
same prediction instead of paying for a new one. Records are keyed by the input's sha256 and
the model (shared by every partition with the same picture), or additionally by partition when
sharing identical images is turned off.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from hunyuan_assets.store import MeshStore, model_slug

RecordState = Literal["submitting", "pending", "completed", "failed"]


@dataclass(frozen=True)
class PredictionRecord:
    state: RecordState
    image_sha256: str
    model: str
    partition_key: str
    run_id: str
    updated_at: str
    prediction_id: str | None = None
    submitted_at: str | None = None
    attempts: int = 0
    error: str | None = None
    mesh_key: str | None = None
    preview_key: str | None = None
    nsfw: bool = False
    quarantined: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PredictionRecord:
        return cls(**json.loads(data))

    def evolve(self, **changes: Any) -> PredictionRecord:
        return replace(self, updated_at=now_iso(), **changes)

    def age_seconds(self) -> float:
        updated = datetime.fromisoformat(self.updated_at)
        return (datetime.now(UTC) - updated).total_seconds()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def record_key(image_sha256: str, model: str, partition_key: str | None = None) -> str:
    """`partition_key=None` means the record is shared by every image with this content."""
    scope = "shared" if partition_key is None else f"partition/{partition_key}"
    return f"predictions/{scope}/{image_sha256}/{model_slug(model)}.json"


class PredictionRecords:
    """Reads and writes prediction records in a mesh store."""

    def __init__(self, store: MeshStore):
        self.store = store

    def get(self, key: str) -> PredictionRecord | None:
        data = self.store.get_bytes(key)
        return PredictionRecord.from_json(data) if data is not None else None

    def put(self, key: str, record: PredictionRecord) -> None:
        self.store.put_bytes(key, record.to_json())

    def claim(self, key: str, record: PredictionRecord) -> bool:
        """Create the record only if none exists: exactly one concurrent claimant wins."""
        return self.store.create_exclusive(key, record.to_json())
