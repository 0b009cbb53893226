"""The image sensor: new or changed images become partitions and runs, on their own.

One definition serves a folder and an S3 prefix (through `ImagesResource`). Each tick lists the
source once, diffs it against what earlier ticks saw (partition key -> fingerprint and content
id) and against the instance's partitions (fetched once, never per key), then:
  - adds partitions for new images, at most `new_partitions_per_tick` per tick (Dagster's daemon
    checks every key of an add request with one query each: measured in bench_sensor_tick.py);
  - requests runs for new images and for images whose *content* changed (a touched file with
    the same bytes requests nothing), one run per contiguous range of partitions, at most
    `images_per_run` images each, so a batch of new images is one single-run backfill;
  - derives run keys from (partition, content id) pairs, so the same picture never triggers two
    runs: Dagster skips a run key it has seen. If the record of earlier ticks is lost, an image
    is compared with what `source_images` registered for its partition instead, so a cursor-less
    tick requests nothing for images already processed.
Content id: the S3 ETag (listed for free; the same bytes uploaded with another multipart layout
get another ETag, costing one run that reuses the stored mesh), or the sha256 of a local file,
computed only when its size or mtime changed. Hashing stops after `seconds_per_tick`; the rest
waits for the next tick.

What earlier ticks saw (about 50 bytes an image, gzip'd) lives in the mesh store under
`sensor_state/`, not in the cursor: Dagster writes the cursor into every tick's row, so a
10,000-image map there (~640 KB) would add ~13 GB a week of skipped ticks (one per 30 s, kept
7 days by default) to the instance's database. The cursor
names one of two alternating snapshot slots plus its digest; the slot a stored cursor points at
is never overwritten, so a tick whose cursor Dagster did not keep is simply evaluated again.

Deleted images: their partitions and meshes are kept on purpose (the meshes were paid for and
lineage stays readable). They leave the snapshot, and the tick log names them; put back with the
same bytes, an image matches what was registered and requests nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from hunyuan_assets.core.registered_images import RegisteredImages
from hunyuan_assets.core.sources import ImageRef, ImageSource, S3ImageSource
from hunyuan_assets.core.store import MeshStore
from hunyuan_assets.integration.compat import partition_range_tags
from hunyuan_assets.integration.jobs import AssetJob
from hunyuan_assets.integration.locations import ImagesResource, MeshStoreResource
from hunyuan_assets.integration.settings import MeshDefsSettings

SNAPSHOT_VERSION = 2
TRIGGER_TAG = "hunyuan/trigger"
IMAGES_TAG = "hunyuan/images"

Known = dict[str, tuple[str, str]]  # partition key -> (fingerprint, content id)


@dataclass(frozen=True)
class SensorLimits:
    """How much one tick may do; whatever is left over waits for the next tick."""

    # After the evaluation (outside its 60 s limit) the daemon checks each key to add with its
    # own query (~2-2.6 ms on SQLite) and writes a planned event per asset and partition of
    # each new run (~11 ms): a tick of 1000 new images took it 25-29 s (bench_sensor_tick.py).
    new_partitions_per_tick: int = 1000
    images_per_run: int = 1000
    run_requests_per_tick: int = 100
    # Time spent hashing local files; Dagster gives a whole sensor evaluation 60 s.
    seconds_per_tick: float = 30.0


# The most images one run of ours takes: the sensor's (by default), the refresh schedule's and
# `materialize_images`'s. Dagster keeps every event of a step until the step ends.
MAX_IMAGES_PER_RUN = SensorLimits().images_per_run


@dataclass(frozen=True)
class TickPlan:
    """What one tick decided. `batches` are contiguous partition ranges, one run each."""

    add_partitions: list[str]
    batches: list[list[str]]
    content_ids: dict[str, str]
    known: Known
    removed: list[str] = field(default_factory=list)
    deferred: int = 0  # images left for a later tick (limits or time budget)
    already_registered: int = 0  # unrecorded images whose content source_images already has


# ---------------------------------------------------------------------- content identity


def content_id_for(source: ImageSource, ref: ImageRef) -> str | None:
    """The S3 ETag, or the sha256 of a local file; None when the file vanished meanwhile."""
    if isinstance(source, S3ImageSource):
        return f"etag:{ref.fingerprint}"
    try:
        data = source.read_bytes(ref)
    except OSError:
        return None
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def registered_content_ids(
    registry: RegisteredImages, source: ImageSource, keys: Sequence[str]
) -> dict[str, str]:
    """partition -> content id of what `source_images` last registered for it."""
    found = {}
    for key, image in registry.get_many(keys).items():
        if isinstance(source, S3ImageSource):
            found[key] = f"etag:{image.fingerprint}" if image.fingerprint else ""
        else:
            found[key] = f"sha256:{image.sha256}" if image.sha256 else ""
    return found


# ---------------------------------------------------------------------------- the diff


def plan_tick(
    refs: Sequence[ImageRef],
    known: Known | None,
    existing_partitions: Sequence[str],
    content_id: Callable[[ImageRef], str | None],
    registered: Callable[[Sequence[str]], Mapping[str, str]],
    limits: SensorLimits = SensorLimits(),
    clock: Callable[[], float] = time.monotonic,
) -> TickPlan:
    """One tick's decisions, without Dagster I/O. `known` is None when no record of earlier
    ticks exists; `registered(keys)` then says what `source_images` holds for those keys."""
    started = clock()
    existing = set(existing_partitions)
    previous = known or {}
    new_known: Known = {}
    add: list[str] = []
    candidates: list[tuple[str, str, str]] = []  # (key, fingerprint, content id)
    deferred = 0
    for ref in refs:
        key = ref.partition_key
        before = previous.get(key)
        is_new = key not in existing
        if before is not None and before[0] == ref.fingerprint and not is_new:
            new_known[key] = before
            continue
        over_budget = clock() - started > limits.seconds_per_tick
        if over_budget or (is_new and len(add) >= limits.new_partitions_per_tick):
            # Keep the old entry: next tick still sees this image as new or changed.
            if before is not None:
                new_known[key] = before
            deferred += 1
            continue
        cid = content_id(ref)
        if cid is None:  # deleted between the listing and the read: gone, as far as we know
            continue
        if is_new:
            add.append(key)
        elif before is not None and before[1] == cid:
            new_known[key] = (ref.fingerprint, cid)  # touched, same bytes: nothing to do
            continue
        candidates.append((key, ref.fingerprint, cid))

    # Partitions this sensor has no record of (first tick, lost state, added by hand): what
    # source_images registered says whether they were processed already.
    unrecorded = [key for key, _, _ in candidates if key in existing and key not in previous]
    recorded = registered(unrecorded) if unrecorded else {}
    content_ids: dict[str, str] = {}
    already = 0
    for key, fingerprint, cid in candidates:
        new_known[key] = (fingerprint, cid)
        if recorded.get(key) == cid:
            already += 1  # its mesh, failed or not, is the refresh schedule's business
            continue
        content_ids[key] = cid

    ordered = [*existing_partitions, *add]
    batches = batched_ranges(ordered, set(content_ids), limits.images_per_run)
    for batch in batches[limits.run_requests_per_tick :]:
        for key in batch:  # forget them, so the next tick requests them again
            deferred += 1
            content_ids.pop(key)
            if key in previous:
                new_known[key] = previous[key]
            else:
                new_known.pop(key, None)
    batches = batches[: limits.run_requests_per_tick]
    seen = {ref.partition_key for ref in refs}
    removed = sorted(key for key in previous if key not in seen)
    return TickPlan(add, batches, content_ids, new_known, removed, deferred, already)


def batched_ranges(ordered: Sequence[str], selected: set[str], max_size: int) -> list[list[str]]:
    """Runs of consecutive selected keys, split into pieces of at most `max_size` keys."""
    batches: list[list[str]] = []
    current: list[str] = []
    for key in ordered:
        if key in selected:
            current.append(key)
            if len(current) >= max_size:
                batches.append(current)
                current = []
        elif current:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return batches


def run_key_for(keys: Sequence[str], content_ids: Mapping[str, str], prefix: str) -> str:
    identity = "\n".join(f"{key}={content_ids[key]}" for key in keys)
    return f"{prefix}-{hashlib.sha256(identity.encode()).hexdigest()[:32]}"


def run_request_for_batch(batch: Sequence[str], run_key: str, tags: dict) -> dg.RunRequest:
    """One partition: `partition_key` (Dagster validates it); several: a partition range."""
    tags = {**tags, IMAGES_TAG: str(len(batch))}
    if len(batch) == 1:
        return dg.RunRequest(run_key=run_key, partition_key=batch[0], tags=tags)
    return dg.RunRequest(
        run_key=run_key, tags={**tags, **partition_range_tags(batch[0], batch[-1])}
    )


def run_requests_for(plan: TickPlan) -> list[dg.RunRequest]:
    return [
        run_request_for_batch(
            batch,
            run_key_for(batch, plan.content_ids, "images"),
            {TRIGGER_TAG: "image_sensor"},
        )
        for batch in plan.batches
    ]


# ------------------------------------------------------------- what earlier ticks saw


@dataclass(frozen=True)
class SensorCursor:
    """Which snapshot slot holds what the last tick saw, and the digest of its bytes."""

    slot: int
    digest: str
    images: int

    def encode(self) -> str:
        return json.dumps(
            {"v": SNAPSHOT_VERSION, "slot": self.slot, "digest": self.digest, "images": self.images}
        )

    @classmethod
    def decode(cls, text: str | None) -> SensorCursor | None:
        """None for no cursor, or one this version does not understand (treated as lost)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            if data.get("v") != SNAPSHOT_VERSION:
                return None
            return cls(int(data["slot"]) % 2, str(data["digest"]), int(data["images"]))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


class SensorSnapshots:
    """Two alternating gzip'd JSON snapshots of `Known` in the mesh store, per sensor+source."""

    def __init__(self, store: MeshStore, sensor_name: str, source_uri: str) -> None:
        self.store = store
        source = hashlib.sha256(source_uri.encode()).hexdigest()[:16]
        self.prefix = f"sensor_state/{sensor_name}/{source}"
        self.source_uri = source_uri

    def key(self, slot: int) -> str:
        return f"{self.prefix}/slot-{slot}.json.gz"

    def load(self, cursor: SensorCursor | None) -> Known | None:
        """The map the cursor points at; None if there is none or it is not the one it names."""
        if cursor is None:
            return None
        data = self.store.get_bytes(self.key(cursor.slot))
        if data is None or _digest(data) != cursor.digest:
            return None
        payload = json.loads(gzip.decompress(data))
        return {k: (v[0], v[1]) for k, v in payload["known"].items()}

    def save(self, known: Known, current: SensorCursor | None, loaded: bool) -> SensorCursor | None:
        """Write `known` into the slot `current` does not point at; keep `current` when it
        was `loaded` and nothing changed."""
        if not known and current is None:
            return None
        raw = json.dumps(
            {"v": SNAPSHOT_VERSION, "source": self.source_uri, "known": known},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        data = gzip.compress(raw, compresslevel=6, mtime=0)
        digest = _digest(data)
        if current is not None and loaded and current.digest == digest:
            return current
        slot = 1 - current.slot if current is not None else 0
        self.store.put_bytes(self.key(slot), data)
        return SensorCursor(slot, digest, len(known))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


# ---------------------------------------------------------------------------- the sensor


def build_image_sensor(
    settings: MeshDefsSettings,
    job: AssetJob,
    limits: SensorLimits = SensorLimits(),
) -> dg.SensorDefinition:
    """The pipeline's image sensor; tests build one with small `limits`."""
    name = settings.job_name("image_sensor")

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING
        if settings.automation
        else dg.DefaultSensorStatus.STOPPED,
        description="Adds a partition per new image and requests meshes for new or changed "
        "images (content ids, not timestamps, decide what changed).",
        required_resource_keys={settings.images_resource, settings.mesh_store_resource},
    )
    def _image_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        images: ImagesResource = getattr(context.resources, settings.images_resource)
        mesh_store: MeshStoreResource = getattr(context.resources, settings.mesh_store_resource)
        source = images.open()
        listing = source.scan()
        refs = listing.images
        instance = context.instance
        existing = instance.get_dynamic_partitions(settings.partitions)
        store = mesh_store.open()
        snapshots = SensorSnapshots(store, name, source.uri)
        registry = RegisteredImages(store, settings.name)
        cursor = SensorCursor.decode(context.cursor)
        known = snapshots.load(cursor)
        if context.cursor and known is None:
            context.log.warning(
                "no snapshot matches the cursor; comparing images with what source_images "
                "registered instead (slower, requests nothing twice)"
            )
        plan = plan_tick(
            refs,
            known,
            existing,
            lambda ref: content_id_for(source, ref),
            lambda keys: registered_content_ids(registry, source, keys),
            limits,
        )
        new_cursor = snapshots.save(plan.known, cursor, loaded=known is not None)
        _log_plan(context, plan, source.uri)
        _log_skipped(context, listing.skipped, source.uri)
        return dg.SensorResult(
            run_requests=run_requests_for(plan),
            dynamic_partitions_requests=(
                [settings.partitions_def.build_add_request(plan.add_partitions)]
                if plan.add_partitions
                else []
            ),
            cursor=new_cursor.encode() if new_cursor else None,
        )

    return _image_sensor


def _log_skipped(context: dg.SensorEvaluationContext, skipped: Sequence, uri: str) -> None:
    """Files that are not images to mesh are named, never silently ignored."""
    if skipped:
        shown = "; ".join(f"{path}: {why}" for path, why in skipped[:10])
        more = f" (and {len(skipped) - 10} more)" if len(skipped) > 10 else ""
        context.log.info(f"{len(skipped)} file(s) in {uri} skipped: {shown}{more}")


def _log_plan(context: dg.SensorEvaluationContext, plan: TickPlan, uri: str) -> None:
    if plan.add_partitions or plan.batches:
        context.log.info(
            f"{len(plan.add_partitions)} new partition(s), {len(plan.content_ids)} image(s) "
            f"to mesh in {len(plan.batches)} run(s)"
        )
    if plan.removed:
        shown = ", ".join(plan.removed[:20]) + (" ..." if len(plan.removed) > 20 else "")
        context.log.info(
            f"{len(plan.removed)} image(s) left {uri}; their partitions and meshes are kept "
            f"on purpose: {shown}"
        )
    if plan.already_registered:
        context.log.info(
            f"{plan.already_registered} image(s) unknown to this sensor were already "
            "registered with the same content: no run requested"
        )
    if plan.deferred:
        context.log.info(f"{plan.deferred} image(s) deferred to the next tick")
