"""What one run of a pipeline's `image_meshes` step does, partition by partition.

The core (`MeshGenerator`) registers, submits, waits, downloads, analyses, stores and logs
each image on its own and hands over each outcome as soon as it exists; this turns them into
Dagster events as they come: a `source_images` materialization and check when an image is
registered, a `meshes` materialization and its checks when its mesh is stored. At the end,
the run's usage goes on its tags and an observation, and the step fails naming the partitions
that failed (retryably only when every failure was transient).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import dagster as dg

from hunyuan_assets.client import WaveSpeedError
from hunyuan_assets.core.gc_pauses import long_lived_objects_frozen
from hunyuan_assets.core.log import PredictionLog
from hunyuan_assets.core.mesh_generation import (
    GenerationPolicy,
    ImageToRegister,
    MeshGenerator,
    MeshOutcome,
    MeshRequest,
    Outcome,
    RegistrationOutcome,
    WorkItem,
)
from hunyuan_assets.core.prediction_rows import RowContext, failure_row
from hunyuan_assets.core.registered_images import RegisteredImages
from hunyuan_assets.core.threads import iterate_async
from hunyuan_assets.integration.compat import (
    latest_materialization_target,
    latest_storage_ids_by_partition,
)
from hunyuan_assets.integration.lineage import (
    PartitionMaterialization,
    derived_version_tags,
    latest_materializations,
    partitions_materialized_in_run,
    source_version_tags,
)
from hunyuan_assets.integration.locations import ImagesResource, MeshStoreResource
from hunyuan_assets.integration.reports import (
    SOURCE_CHECK,
    check_evaluation,
    mesh_check_evaluations,
    mesh_metadata,
    source_metadata,
)
from hunyuan_assets.integration.resource import Hunyuan3DResource
from hunyuan_assets.integration.settings import MeshDefsSettings

SOURCE_CODE_VERSION = "1"
USAGE_TAG_PREFIX = "wavespeed/"
# Local files the step cannot use however often it tries: not retried (MeshStep.run).
_NOT_FIXED_BY_WAITING = (NotADirectoryError, IsADirectoryError, PermissionError)


class TransientFailure(Exception):
    """Some partitions failed for reasons worth retrying (rate limits, 5xx, timeouts)."""


@dataclass
class Usage:
    """What a run asked of the API, for its tags and its usage observation."""

    submitted: int = 0  # new predictions this run paid for
    reused: int = 0  # meshes this run took from the store instead
    failed: int = 0  # partitions whose prediction failed (or could not be collected)
    not_submitted: int = 0  # partitions that failed before a prediction (budget, refusals)
    inference_ms: int = 0
    cost_usd: float | None = 0.0  # None once a paid prediction had no price (unknown)

    def add(self, outcome: MeshOutcome) -> None:
        if self.cost_usd is not None:
            self.cost_usd = None if outcome.cost_usd is None else self.cost_usd + outcome.cost_usd
        if outcome.status == "reused":
            self.reused += 1
            return
        has_prediction = outcome.prediction is not None or bool(
            outcome.details.get("prediction_id")
        )
        if outcome.status == "failed":
            if has_prediction:
                self.failed += 1
            else:
                self.not_submitted += 1
        if outcome.prediction is not None and not outcome.resumed:
            self.submitted += 1
        if outcome.prediction is not None:
            self.inference_ms += outcome.prediction.inference_ms or 0

    def metadata(self) -> dict:
        usage = {
            "wavespeed.predictions_submitted": self.submitted,
            "wavespeed.reused": self.reused,
            "wavespeed.failed": self.failed,
            "wavespeed.not_submitted": self.not_submitted,
            "wavespeed.inference_seconds": round(self.inference_ms / 1000, 3),
        }
        if self.cost_usd is not None:  # no price configured: no cost claimed
            usage["wavespeed.cost_usd"] = round(self.cost_usd, 6)
        return usage


@dataclass
class MeshStep:
    context: dg.AssetExecutionContext
    settings: MeshDefsSettings
    config: object  # MeshesConfig: per-run overrides (None fields: the pipeline's setting)
    code_version: str
    failures: dict[str, str] = field(default_factory=dict)
    transient: set[str] = field(default_factory=set)
    usage: Usage = field(default_factory=Usage)
    generator: MeshGenerator | None = None

    def _option(self, name: str):
        value = getattr(self.config, name, None)
        return getattr(self.settings, name) if value is None else value

    @property
    def hunyuan3d(self) -> Hunyuan3DResource:
        return getattr(self.context.resources, self.settings.hunyuan3d_resource)

    @property
    def images(self) -> ImagesResource:
        return getattr(self.context.resources, self.settings.images_resource)

    @property
    def mesh_store(self) -> MeshStoreResource:
        return getattr(self.context.resources, self.settings.mesh_store_resource)

    def run(self) -> Iterator:
        s = self.settings
        selected = self.context.selected_asset_keys
        register = self._keys_to_do(s.source_images_key) if s.source_images_key in selected else []
        generate = self._keys_to_do(s.meshes_key) if s.meshes_key in selected else []
        store = self.mesh_store.open()
        self.log = PredictionLog(store)
        self.registry = RegisteredImages(store, s.name)
        run_id = self.context.run.run_id
        self.rows = RowContext(s.name, self.hunyuan3d.model, run_id, self.code_version)

        source = self.images.open()
        refs = {ref.partition_key: ref for ref in source.list_images()} if register else {}
        registering = set(register)
        items: list[WorkItem] = []
        for key in register:
            if key not in refs:
                yield from self._fail_registration(key, f"no such image in {source.uri}")
                continue
            items.append(ImageToRegister(refs[key], generate=key in generate))
        mesh_only = [k for k in generate if k not in registering]
        items += self._mesh_only_items(mesh_only, source)
        instance = self.context.instance
        self._sources = latest_materializations(instance, s.source_images_key, mesh_only)

        policy = GenerationPolicy(
            model=self.hunyuan3d.model,
            nsfw_policy=self._option("nsfw_policy"),
            reuse_identical_images=self._option("reuse_identical_images"),
            preview_size=self._option("preview_size"),
            run_id=self.context.run.run_id,
            price_per_prediction_usd=s.price_per_prediction_usd,
            daily_budget_usd=s.daily_budget_usd,
            pipeline=s.name,
            code_version=self.code_version,
            analysis_in_processes=s.analyse_in_processes,
            submits_in_flight=self.hunyuan3d.max_submits_in_flight,
        )
        hunyuan3d = self.hunyuan3d

        async def outcomes() -> AsyncIterator[Outcome]:
            async with hunyuan3d.get_async_client() as client:
                generator = self.generator = MeshGenerator(
                    client,
                    store,
                    policy,
                    hunyuan3d.max_concurrency,
                    source=source,
                    log=self.log,
                    registry=self.registry,
                )
                async for outcome in generator.run(items):
                    yield outcome

        with long_lived_objects_frozen():  # full GCs would stall the loop ~0.1-0.5 s each
            try:
                for outcome in iterate_async(outcomes):
                    if isinstance(outcome, RegistrationOutcome):
                        yield from self._registered(outcome, outcome.partition_key in registering)
                    else:
                        yield from self._meshed(outcome)
            except _NOT_FIXED_BY_WAITING as exc:
                # A folder that is a file, a path we may not write: the step's RetryPolicy
                # would only repeat it three times over ~2 minutes.
                message = f"{type(exc).__name__}: {exc}"
                raise dg.Failure(description=message, allow_retries=False) from exc
        yield from self._report_usage()
        self._raise_for_failures()

    # -- what to do ------------------------------------------------------------------------
    def _keys_to_do(self, asset_key: dg.AssetKey) -> list[str]:
        keys = list(self.context.partition_keys)
        if self.context.retry_number > 0:  # a step retry skips what this run already reported
            run_id = self.context.run.run_id
            done = partitions_materialized_in_run(self.context.instance, run_id, asset_key)
            keys = [k for k in keys if k not in done]
        return keys

    def _mesh_only_items(self, keys: list[str], source) -> list[WorkItem]:
        """Partitions whose image was registered by an earlier run: its URL from the store,
        registered again (same bytes required) when the URL has expired."""
        if not keys:
            return []
        registered = self.registry.get_many(keys)
        refs = None
        items: list[WorkItem] = []
        for key in keys:
            image = registered.get(key)
            if image is None:
                error = "source_images has no registration for this image; materialize it first"
                self._fail(key, error, error_type="NotRegistered")
                continue
            if not image.url_expired():
                items.append(MeshRequest(key, image.image_uri, image.sha256, image.image_url))
                continue
            if refs is None:
                refs = {ref.partition_key: ref for ref in source.list_images()}
            if key not in refs:
                error = "its registered URL expired and the image is no longer in the source"
                self._fail(key, error, image.image_uri, image.sha256, "NotRegistered")
                continue
            items.append(ImageToRegister(refs[key], expected_sha256=image.sha256))
        return items

    # -- reporting -------------------------------------------------------------------------
    def _registered(self, outcome: RegistrationOutcome, report: bool) -> Iterator:
        registration, key = outcome.registration, outcome.partition_key
        s = self.settings
        if registration.ok and registration.info is not None:
            if report:
                sha = registration.info.sha256
                yield dg.AssetMaterialization(
                    asset_key=s.source_images_key,
                    partition=key,
                    metadata=source_metadata(registration),
                    tags=source_version_tags(sha, SOURCE_CODE_VERSION),
                )
                target = self._target(s.source_images_key, key)
                if target is not None:  # the mesh's lineage points at it too (no second query)
                    self._sources[key] = PartitionMaterialization(
                        key, target.storage_id, sha, {}, {}, target.timestamp
                    )
                passed = {"sha256": sha}
                yield check_evaluation(s.source_images_key, SOURCE_CHECK, key, True, passed, target)
            return
        error = registration.error or "unknown error"
        if not report:
            error = f"its registered URL expired and could not be renewed: {error}"
        self._note_failure(key, error, registration.transient)
        if report:
            evidence = {
                "error": error,
                "sha256": registration.content_sha256,
                "fingerprint": registration.ref.fingerprint,
            }
            yield check_evaluation(s.source_images_key, SOURCE_CHECK, key, False, evidence)

    def _meshed(self, outcome: MeshOutcome) -> Iterator:
        s, key = self.settings, outcome.request.partition_key
        self.usage.add(outcome)
        if outcome.status == "failed":
            self._note_failure(key, outcome.error or "failed", outcome.transient)
        if outcome.mesh_uri is None:
            return
        if outcome.status != "failed":
            source = self._source_of(key, outcome.request.image_sha256)
            tags = derived_version_tags(
                self.code_version, {s.source_images_key: source}, self.hunyuan3d.model
            )
            metadata = mesh_metadata(outcome, self.hunyuan3d.model)
            yield dg.AssetMaterialization(
                asset_key=s.meshes_key, partition=key, metadata=metadata, tags=tags
            )
        # Checks point at the mesh just reported; a failed one's output was not materialized.
        target = self._target(s.meshes_key, key) if outcome.status != "failed" else None
        yield from mesh_check_evaluations(
            s.meshes_key, outcome, self._option("min_faces"), self._option("max_faces"), target
        )

    def _target(self, asset_key: dg.AssetKey, key: str):
        """The materialization a check of this partition evaluates (the one just reported)."""
        return latest_materialization_target(self.context.instance, asset_key, key)

    def _source_of(self, key: str, sha256: str) -> PartitionMaterialization:
        """The source_images materialization this mesh was made from (for staleness)."""
        known = self._sources.get(key)
        if known is None or known.data_version != sha256:
            ids = latest_storage_ids_by_partition(
                self.context.instance, self.settings.source_images_key, [key]
            )
            known = PartitionMaterialization(key, ids.get(key, 0), sha256, {}, {}, 0.0)
        return known

    def _report_usage(self) -> Iterator:
        metadata = self.usage.metadata()
        lag = self.generator.loop_lag.summary() if self.generator else {}
        if lag:  # how late the event loop ran: a held loop would show here
            metadata["event_loop_lag_p99_ms"] = lag["p99_ms"]
            metadata["event_loop_lag_max_ms"] = lag["max_ms"]
        balance = self._balance()
        if balance is not None:
            metadata["wavespeed.balance_usd"] = balance
        tags = {
            f"{USAGE_TAG_PREFIX}{name.removeprefix('wavespeed.')}": str(value)
            for name, value in metadata.items()
        }
        self.context.instance.add_run_tags(self.context.run.run_id, tags)
        yield dg.AssetObservation(asset_key=self.settings.meshes_key, metadata=metadata)

    def _balance(self) -> float | None:
        """The account's credit after this run, when the API answers the balance call."""
        try:
            with self.hunyuan3d.get_client() as client:
                return client.get_balance().amount
        except WaveSpeedError as exc:
            self.context.log.info(f"no balance shown: {exc}")
            return None

    # -- failures --------------------------------------------------------------------------
    def _fail_registration(self, key: str, error: str) -> Iterator:
        self._fail(key, error, error_type="NotInSource")
        yield check_evaluation(
            self.settings.source_images_key, SOURCE_CHECK, key, False, {"error": error}
        )

    def _fail(
        self,
        key: str,
        error: str,
        image_uri: str | None = None,
        image_sha256: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """A partition that fails before the core sees it: logged here, like every attempt."""
        self._note_failure(key, error, transient=False)
        row = failure_row(
            self.rows, key, error, image_uri=image_uri, image_sha256=image_sha256,
            error_type=error_type,
        )  # fmt: skip
        self.log.append([row])

    def _note_failure(self, key: str, error: str, transient: bool) -> None:
        self.failures[key] = error
        if transient:
            self.transient.add(key)
        self.context.log.error(f"{key}: {error}")

    def _raise_for_failures(self) -> None:
        if not self.failures:
            return
        summary = "; ".join(f"{k}: {v}" for k, v in sorted(self.failures.items()))
        total = len(self.context.partition_keys)
        message = f"{len(self.failures)} of {total} image(s) failed: {summary}"
        if self.transient:
            # Rate limits, 5xx, timeouts: the RetryPolicy runs the step again, which skips the
            # partitions already reported and resumes recorded predictions (nothing paid twice).
            raise TransientFailure(message)
        raise dg.Failure(description=message, allow_retries=False)
