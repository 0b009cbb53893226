"""Per-partition lineage for single-run backfills.

Dagster records data provenance per step, not per partition: in a run over many partitions
every partition would get the same input version (dagster #21072 and friends). The assets
here report each partition's materialization themselves, so they also write the provenance
tags Dagster's staleness resolver reads (`dagster/input_data_version/...`,
`dagster/input_event_pointer/...`), one partition at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from hunyuan_assets.integration.compat import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    input_data_version_tag,
    input_event_pointer_tag,
    latest_storage_ids_by_partition,
)


@dataclass(frozen=True)
class PartitionMaterialization:
    """The latest materialization of one partition: its storage id, data version and metadata."""

    partition_key: str
    storage_id: int
    data_version: str | None
    metadata: Mapping[str, Any]
    tags: Mapping[str, str]
    timestamp: float


def latest_materializations(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition_keys: Iterable[str]
) -> dict[str, PartitionMaterialization]:
    """Latest materialization per partition, in two queries whatever the partition count."""
    wanted = set(partition_keys)
    if not wanted:
        return {}
    storage_ids = latest_storage_ids_by_partition(instance, asset_key, wanted)
    if not storage_ids:
        return {}
    found: dict[str, PartitionMaterialization] = {}
    ids = list(storage_ids.values())
    for start in range(0, len(ids), 500):
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=ids[start : start + 500]),
            limit=500,
        )
        for record in result.records:
            event = record.asset_materialization
            if event is None or event.partition is None:
                continue
            found[event.partition] = PartitionMaterialization(
                partition_key=event.partition,
                storage_id=record.storage_id,
                data_version=event.tags.get(DATA_VERSION_TAG) if event.tags else None,
                metadata={k: v.value for k, v in event.metadata.items()},
                tags=dict(event.tags or {}),
                timestamp=record.timestamp,
            )
    return found


def partitions_materialized_in_run(
    instance: dg.DagsterInstance, run_id: str, asset_key: dg.AssetKey
) -> set[str]:
    """Partitions this run already reported: a step retry skips them instead of redoing them."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    done = set()
    for record in records:
        event = record.asset_materialization
        if event is not None and event.asset_key == asset_key and event.partition:
            done.add(event.partition)
    return done


def source_version_tags(data_version: str, code_version: str) -> dict[str, str]:
    """Tags for a root asset whose data version is its content hash."""
    return {
        DATA_VERSION_TAG: data_version,
        DATA_VERSION_IS_USER_PROVIDED_TAG: "true",
        CODE_VERSION_TAG: code_version,
    }


def derived_version_tags(
    code_version: str, inputs: Mapping[dg.AssetKey, PartitionMaterialization], *extra: str
) -> dict[str, str]:
    """Tags for a partition computed from upstream partitions: provenance + a derived version."""
    tags = {CODE_VERSION_TAG: code_version}
    parts = [code_version, *extra]
    for key, upstream in sorted(inputs.items(), key=lambda item: item[0].to_user_string()):
        version = upstream.data_version or "INITIAL"
        tags[input_data_version_tag(key)] = version
        tags[input_event_pointer_tag(key)] = str(upstream.storage_id)
        parts.append(f"{key.to_user_string()}={version}")
    tags[DATA_VERSION_TAG] = hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]
    return tags
