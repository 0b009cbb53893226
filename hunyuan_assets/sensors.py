"""The image sensor: new or changed images become partitions and runs, on their own.

One definition serves a folder and an S3 prefix (through `ImagesResource`). Each tick lists the
source once, diffs it against the cursor (partition key -> fingerprint and content id) and
against the instance's partitions (fetched once, not per key), then:
  - adds partitions for new images, at most `MAX_NEW_PARTITIONS_PER_TICK` per tick;
  - requests runs for new images and for images whose *content* changed (a touched file with
    the same bytes requests nothing), grouped into contiguous partition ranges so a batch of
    new images is one single-run backfill;
  - run keys are derived from (partition, content id), so the same picture never triggers two
    runs, even if the cursor is lost.
Deleted images: their partitions and meshes are kept on purpose (meshes were paid for, and
lineage stays readable); they are dropped from the cursor, so an image put back is re-checked
and, having the same content, reuses its stored mesh without a new prediction.
"""


import base64
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from hunyuan_assets.assets import images_partitions
from hunyuan_assets.jobs import mesh_job
from hunyuan_assets.locations import ImagesResource
from hunyuan_assets.sources import ImageRef, ImageSource

MAX_NEW_PARTITIONS_PER_TICK = 5000
MAX_RUN_REQUESTS_PER_TICK = 200
CURSOR_VERSION = 1


@dataclass
class ImageSensorCursor:
    """partition key -> (fingerprint, content id) for every image seen so far."""

    known: dict[str, tuple[str, str]] = field(default_factory=dict)

    def encode(self) -> str:
        raw = json.dumps({"v": CURSOR_VERSION, "known": self.known}, separators=(",", ":"))
        return base64.b64encode(zlib.compress(raw.encode(), 6)).decode()

    @classmethod
    def decode(cls, cursor: str | None) -> "ImageSensorCursor":
        if not cursor:
            return cls()
        data = json.loads(zlib.decompress(base64.b64decode(cursor)))
        return cls({k: (v[0], v[1]) for k, v in data.get("known", {}).items()})


@dataclass(frozen=True)
class TickPlan:
    add_partitions: list[str]
    run_keys: list[str]  # partitions to (re)materialize, in partition order
    content_ids: dict[str, str]
    removed: list[str]
    deferred: int  # new images left for the next tick
    cursor: ImageSensorCursor


def content_id_for(source: ImageSource, ref: ImageRef) -> str:
    """S3 ETags already identify content; local files are hashed (only when their stat changed)."""
    if ref.uri.startswith("s3://"):
        return ref.fingerprint
    return hashlib.sha256(source.read_bytes(ref)).hexdigest()


def plan_tick(
    refs: Sequence[ImageRef],
    previous: ImageSensorCursor,
    existing_partitions: Sequence[str],
    content_id: Callable[[ImageRef], str],
    max_new: int = MAX_NEW_PARTITIONS_PER_TICK,
    max_runs: int = MAX_RUN_REQUESTS_PER_TICK,
) -> TickPlan:
    """Pure diff of one tick; the sensor below only does I/O around it."""
    existing = set(existing_partitions)
    known = dict(previous.known)
    wanted: list[str] = []
    content_ids: dict[str, str] = {}
    add: list[str] = []
    deferred = 0
    seen = set()
    for ref in refs:
        key = ref.partition_key
        seen.add(key)
        before = known.get(key)
        if before is not None and before[0] == ref.fingerprint and key in existing:
            continue
        if key not in existing:
            if len(add) >= max_new:
                deferred += 1
                continue
            add.append(key)
        cid = content_id(ref)
        if before is not None and before[1] == cid and key in existing:
            known[key] = (ref.fingerprint, cid)  # touched, same bytes: nothing to do
            continue
        wanted.append(key)
        content_ids[key] = cid
        known[key] = (ref.fingerprint, cid)
    removed = sorted(k for k in known if k not in seen)
    for key in removed:
        del known[key]
    order = {k: i for i, k in enumerate([*existing_partitions, *add])}
    wanted.sort(key=order.__getitem__)
    ranges = contiguous_ranges([*existing_partitions, *add], set(wanted))
    if len(ranges) > max_runs:
        # Leave the rest for the next tick: forget them in the cursor so they come back.
        for start, end in ranges[max_runs:]:
            for key in _keys_between([*existing_partitions, *add], start, end):
                if key in content_ids:
                    known.pop(key, None)
                    content_ids.pop(key)
        wanted = [k for k in wanted if k in content_ids]
    return TickPlan(add, wanted, content_ids, removed, deferred, ImageSensorCursor(known))


def contiguous_ranges(ordered: Sequence[str], selected: set[str]) -> list[tuple[str, str]]:
    """Maximal runs of consecutive selected keys, as (first, last) pairs."""
    ranges: list[tuple[str, str]] = []
    start = prev = None
    for key in ordered:
        if key in selected:
            start = start or key
            prev = key
        elif start is not None:
            ranges.append((start, prev))  # type: ignore[arg-type]
            start = prev = None
    if start is not None:
        ranges.append((start, prev))  # type: ignore[arg-type]
    return ranges


def _keys_between(ordered: Sequence[str], start: str, end: str) -> list[str]:
    i, j = ordered.index(start), ordered.index(end)
    return list(ordered[i : j + 1])


def run_requests_for(plan: TickPlan, ordered: Sequence[str]) -> list[dg.RunRequest]:
    requests = []
    for start, end in contiguous_ranges(ordered, set(plan.run_keys)):
        keys = _keys_between(ordered, start, end)
        identity = "|".join(f"{k}={plan.content_ids[k]}" for k in keys)
        run_key = "images-" + hashlib.sha256(identity.encode()).hexdigest()[:24]
        tags = {"hunyuan/trigger": "image_sensor", "hunyuan/images": str(len(keys))}
        if start == end:
            requests.append(dg.RunRequest(run_key=run_key, partition_key=start, tags=tags))
        else:
            tags.update({ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end})
            requests.append(dg.RunRequest(run_key=run_key, tags=tags))
    return requests


@dg.sensor(
    job=mesh_job,
    minimum_interval_seconds=int(os.environ.get("HUNYUAN_SENSOR_INTERVAL_SECONDS", "30")),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a partition per new image and requests meshes for new or changed images.",
)
def image_sensor(context: dg.SensorEvaluationContext, images: ImagesResource) -> dg.SensorResult:
    source = images.open()
    refs = source.list_images()
    existing = context.instance.get_dynamic_partitions(images_partitions.name)
    previous = ImageSensorCursor.decode(context.cursor)
    plan = plan_tick(refs, previous, existing, lambda ref: content_id_for(source, ref))
    ordered = [*existing, *plan.add_partitions]
    run_requests = run_requests_for(plan, ordered)
    if plan.removed:
        context.log.info(
            f"{len(plan.removed)} image(s) left {source.uri}; their partitions and meshes are "
            f"kept: {', '.join(plan.removed[:20])}"
        )
    if plan.deferred:
        context.log.info(f"{plan.deferred} new image(s) deferred to the next tick")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=(
            [images_partitions.build_add_request(plan.add_partitions)] if plan.add_partitions else []
        ),
        cursor=plan.cursor.encode(),
    )
