"""One mesh pipeline's settings, and every Dagster name derived from its `name`.

`build_mesh_defs(name, images, store, **options)` and `MeshesComponent` both end up here, so
the Python path and the YAML path share one set of options, validated once. Several pipelines
live side by side in one code location because every asset key, partitions definition, job,
sensor, schedule and resource key starts with the pipeline's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import dagster as dg

from hunyuan_assets.client import DEFAULT_BASE_URL, DEFAULT_MODEL
from hunyuan_assets.integration.resource import API_KEY_ENV

# Shared by every pipeline: the account's concurrency limit is one number, whatever the
# number of pipelines (dagster.yaml: `concurrency.pools.default_limit`).
WAVESPEED_POOL = "wavespeed"
NsfwPolicy = Literal["keep", "quarantine", "fail"]
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class MeshDefsSettings:
    """What `build_mesh_defs` accepts; see its docstring for each option."""

    name: str
    images: str
    store: str
    model_path: str = DEFAULT_MODEL
    base_url: str = DEFAULT_BASE_URL
    api_key: str = field(default_factory=lambda: dg.EnvVar(API_KEY_ENV), repr=False)
    max_concurrency: int = 2
    max_submits_in_flight: int = 1
    nsfw_policy: NsfwPolicy = "quarantine"
    reuse_identical_images: bool = True
    min_faces: int = 100
    max_faces: int = 200_000
    preview_size: int = 256
    automation: bool = True
    sensor_interval_seconds: int = 30
    refresh_cron: str = "*/30 * * * *"
    compaction_cron: str = "17 3 * * *"
    s3_endpoint_url: str | None = None
    price_per_prediction_usd: float | None = None
    daily_budget_usd: float | None = None
    # Mesh analysis in worker processes (None: when 32+ predictions are in flight, where it
    # measurably pays; bench/bench_mesh.py).
    analysis_in_processes: bool | None = None
    _partitions: dg.DynamicPartitionsDefinition = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"pipeline name {self.name!r} must be 1-40 characters of a-z, 0-9 and '_', "
                "starting with a letter (it prefixes asset keys, jobs and resource keys)"
            )
        if not self.images or not self.store:
            raise ValueError(f"pipeline {self.name!r} needs both `images` and `store`")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if self.max_submits_in_flight < 1:
            raise ValueError("max_submits_in_flight must be at least 1")
        if not 0 <= self.min_faces <= self.max_faces:
            raise ValueError("face budget needs 0 <= min_faces <= max_faces")
        if not 8 <= self.preview_size <= 2048:
            raise ValueError("preview_size must be between 8 and 2048 pixels")
        if self.sensor_interval_seconds < 1:
            raise ValueError("sensor_interval_seconds must be at least 1")
        for label in ("price_per_prediction_usd", "daily_budget_usd"):
            value = getattr(self, label)
            if value is not None and value < 0:
                raise ValueError(f"{label} must not be negative")
        if self.daily_budget_usd is not None and self.price_per_prediction_usd is None:
            raise ValueError(
                "daily_budget_usd needs price_per_prediction_usd (no price is assumed: the "
                "public price of a Hunyuan3D prediction is not confirmed)"
            )
        partitions = dg.DynamicPartitionsDefinition(name=self.partitions)
        object.__setattr__(self, "_partitions", partitions)

    # -- names derived from `name` ---------------------------------------------------------
    @property
    def partitions(self) -> str:
        return f"{self.name}_images"

    @property
    def partitions_def(self) -> dg.DynamicPartitionsDefinition:
        return self._partitions

    def asset_key(self, leaf: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, leaf])

    @property
    def source_images_key(self) -> dg.AssetKey:
        return self.asset_key("source_images")

    @property
    def meshes_key(self) -> dg.AssetKey:
        return self.asset_key("meshes")

    @property
    def prediction_log_key(self) -> dg.AssetKey:
        return self.asset_key("prediction_log")

    @property
    def hunyuan3d_resource(self) -> str:
        return f"{self.name}_hunyuan3d"

    @property
    def images_resource(self) -> str:
        return f"{self.name}_images"

    @property
    def mesh_store_resource(self) -> str:
        return f"{self.name}_mesh_store"

    def job_name(self, what: str) -> str:
        return f"{self.name}_{what}"

    @property
    def group(self) -> str:
        return self.name

    @property
    def analyse_in_processes(self) -> bool:
        if self.analysis_in_processes is None:
            return self.max_concurrency >= 32
        return self.analysis_in_processes
