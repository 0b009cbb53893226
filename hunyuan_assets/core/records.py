"""Durable prediction records: what was paid for, kept in the mesh store.

A record is written *before* waiting on a prediction, so a crashed or retried run resumes the
same prediction instead of paying for a new one. Records are keyed by the input's sha256 and
the model (shared by every partition with the same picture), or additionally by partition when
sharing identical images is turned off.

Each submission of a picture is one *generation*, stored as its own file
(`predictions/<scope>/<sha256>/<model slug>/000001.json`, `000002.json`, ...) and created with
`create_exclusive`. The store has no compare-and-swap, but it has create-if-absent: so exactly
one of many concurrent runs wins the right to submit generation N+1, and the others resume it.
Only the latest generation matters; older files stay as the history of what was paid for.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from hunyuan_assets.core.store import MeshStore, model_slug

# submitting: a run holds the claim and is sending the submit POST (no prediction id yet).
# pending:    the prediction id is known; anyone may wait on it.
# completed:  the mesh is stored at `mesh_key`.
# failed:     the prediction (or a submit the API refused) failed; a new generation may submit.
# uncertain:  a submit was sent but its answer was lost: the task may exist and be billed, so
#             no run submits this picture again until a person resolves it (see `uncertain_help`).
RecordState = Literal["submitting", "pending", "completed", "failed", "uncertain"]
_GENERATION_DIGITS = 6


@dataclass(frozen=True)
class PredictionRecord:
    state: RecordState
    image_sha256: str
    model: str
    partition_key: str
    run_id: str
    updated_at: str
    generation: int = 1  # 1 for the first submission of this picture, +1 for each resubmission
    prediction_id: str | None = None
    submitted_at: str | None = None
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


def record_prefix(image_sha256: str, model: str, partition_key: str | None = None) -> str:
    """The folder of one picture's records; `partition_key=None` means shared by every image
    with this content."""
    scope = "shared" if partition_key is None else f"partition/{partition_key}"
    return f"predictions/{scope}/{image_sha256}/{model_slug(model)}"


def generation_key(prefix: str, generation: int) -> str:
    return f"{prefix}/{generation:0{_GENERATION_DIGITS}d}.json"


def uncertain_help(store: MeshStore, prefix: str, record: PredictionRecord) -> str:
    """What a person does with a submission whose outcome is unknown."""
    where = store.uri_for(generation_key(prefix, record.generation))
    return (
        f"the submission of this image by run {record.run_id or '?'} may have been accepted and "
        f"billed, but its answer was lost, so it is NOT submitted again automatically. Check the "
        f"WaveSpeed dashboard: if the prediction exists, put its id into {where} with state "
        "'pending' (the next run resumes it); otherwise set the state to 'failed' (the next run "
        "submits once)."
    )


class PredictionRecords:
    """Reads and writes prediction records in a mesh store."""

    def __init__(self, store: MeshStore):
        self.store = store

    def latest(self, prefix: str) -> PredictionRecord | None:
        """The newest generation's record, or None when this picture was never submitted."""
        found = [_generation_of(key) for key in self.store.list_keys(f"{prefix}/")]
        generations = [g for g in found if g is not None]
        for generation in sorted(generations, reverse=True):
            data = self.store.get_bytes(generation_key(prefix, generation))
            if data is not None:  # deleted between the listing and the read: take the next
                return PredictionRecord.from_json(data)
        return None

    def claim(self, prefix: str, record: PredictionRecord) -> bool:
        """Create `record.generation` only if nobody has: exactly one concurrent claimant wins."""
        return self.store.create_exclusive(
            generation_key(prefix, record.generation), record.to_json()
        )

    def put(self, prefix: str, record: PredictionRecord) -> None:
        """Update a generation that this run claimed or resumed."""
        self.store.put_bytes(generation_key(prefix, record.generation), record.to_json())


def _generation_of(key: str) -> int | None:
    name = key.rsplit("/", 1)[-1]
    stem = name.removesuffix(".json")
    if name == stem or len(stem) != _GENERATION_DIGITS or not stem.isdigit():
        return None
    return int(stem)
