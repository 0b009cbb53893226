"""`MeshesComponent`: an images -> meshes pipeline declared in a `defs.yaml`.

A thin layer over `build_mesh_defs` (factory.py): the attributes are the factory's arguments,
with the same defaults, validated by Dagster's component loader (`dg check defs` names a field
of the wrong type). Scaffold one with `dg scaffold defs hunyuan_assets.MeshesComponent
<folder>`; several `defs.yaml` with different names load side by side.

    type: hunyuan_assets.MeshesComponent
    attributes:
      name: products
      images: s3://photos/products
      store: s3://meshes/shared
      api_key: "{{ env.WAVESPEED_API_KEY }}"
      max_concurrency: 2

The key's `{{ env.NAME }}` template is kept as a reference to the variable (`EnvVar("NAME")`),
not rendered into its value, so the key never lands in the resource configuration the UI shows.
Relative `images`/`store` paths are relative to the project root.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import BaseModel, Field

from hunyuan_assets.integration.factory import build_mesh_defs
from hunyuan_assets.integration.resource import API_KEY_ENV
from hunyuan_assets.integration.settings import MeshDefsSettings

_ENV_REFERENCE = re.compile(
    r"^\{\{\s*env(?:\.(?P<dot>[A-Za-z_]\w*)|\(\s*['\"](?P<call>[A-Za-z_]\w*)['\"]\s*\))\s*\}\}$"
)


def _default(name: str) -> Any:
    """The factory's default for an option, so the YAML and Python paths cannot drift."""
    return MeshDefsSettings.__dataclass_fields__[name].default


class ApiKey(BaseModel):
    """The key as the YAML gave it: the name of an environment variable (read at run time,
    never shown), or, discouraged, a literal value."""

    env_var: str | None = None
    value: str | None = Field(default=None, repr=False)

    def for_resource(self) -> str:
        return dg.EnvVar(self.env_var) if self.env_var else self.value or ""


def resolve_api_key(context: dg.ResolutionContext, raw: str | None) -> ApiKey:
    """`{{ env.NAME }}` -> the variable NAME; missing -> WAVESPEED_API_KEY; any other text is
    rendered as a template and taken literally."""
    if raw is None:
        return ApiKey(env_var=API_KEY_ENV)
    found = _ENV_REFERENCE.match(raw.strip())
    if found:
        return ApiKey(env_var=found["dot"] or found["call"])
    return ApiKey(value=context.resolve_value(raw, as_type=str))


class MeshesComponentScaffolder(dg.Scaffolder):
    """Writes a `defs.yaml` that loads as it is: the folder's name as the pipeline name, an
    (empty) images folder to drop pictures into, a store shared by the project's pipelines."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = re.sub(r"[^a-z0-9_]+", "_", request.target_path.name.lower()).strip("_")
        name = name if re.match(r"^[a-z]", name or "") else f"meshes_{name}".rstrip("_")
        root = request.project_root or Path.cwd()
        (root / "data" / name / "images").mkdir(parents=True, exist_ok=True)
        request.target_path.mkdir(parents=True, exist_ok=True)
        (request.target_path / "defs.yaml").write_text(
            textwrap.dedent(
                f"""\
                type: {request.type_name}
                attributes:
                  name: {name}  # prefixes asset keys, jobs and resource keys: unique per pipeline
                  images: data/{name}/images  # a folder or s3://bucket/prefix
                  store: data/mesh_store  # shared by pipelines: a picture is never paid twice
                  api_key: "{{{{ env.WAVESPEED_API_KEY }}}}"
                  base_url: https://api.wavespeed.ai  # or a local emulator's URL
                  max_concurrency: 2  # WaveSpeed tiers: Bronze 2, Silver 300, Gold 3000
                  # price_per_prediction_usd: 0.30
                  # daily_budget_usd: 10.0
                """
            )
        )


@dg.scaffold_with(MeshesComponentScaffolder)
class MeshesComponent(dg.Component, dg.Model, dg.Resolvable):
    """Images (a folder or an S3 prefix) -> textured GLB meshes with WaveSpeed's Hunyuan3D
    v2.1: one dynamic partition per image, checks, a parquet prediction log, a sensor for new
    or changed images and schedules that heal failures."""

    name: str = Field(description="Prefix of every asset key, job, sensor and resource key.")
    images: str = Field(
        description="A folder (relative to the project root) or s3://bucket/prefix."
    )
    store: str = Field(description="Where meshes, previews, records and the log live.")
    model_path: str = Field(
        default=_default("model_path"), description="WaveSpeed model path (under /api/v3/)."
    )
    base_url: str = Field(default=_default("base_url"), description="API root or emulator URL.")
    api_key: Annotated[
        ApiKey | None,
        dg.Resolver(
            resolve_api_key,
            model_field_type=str | None,
            inject_before_resolve=False,
            description='"{{ env.WAVESPEED_API_KEY }}" (the default): read at run time.',
        ),
    ] = None
    max_concurrency: int = Field(
        default=_default("max_concurrency"), description="Predictions in flight per run."
    )
    max_submits_in_flight: int = Field(
        default=_default("max_submits_in_flight"),
        description="Submits awaiting their answer at once (Hunyuan3DResource says the trade-off).",
    )
    nsfw_policy: Literal["keep", "quarantine", "fail"] = Field(
        default=_default("nsfw_policy"), description="What to do with NSFW-flagged meshes."
    )
    reuse_identical_images: bool = Field(default=_default("reuse_identical_images"))
    min_faces: int = Field(default=_default("min_faces"))
    max_faces: int = Field(default=_default("max_faces"))
    preview_size: int = Field(default=_default("preview_size"))
    automation: bool = Field(
        default=_default("automation"), description="Start the sensor and schedules running."
    )
    sensor_interval_seconds: int = Field(default=_default("sensor_interval_seconds"))
    refresh_cron: str = Field(default=_default("refresh_cron"))
    compaction_cron: str = Field(default=_default("compaction_cron"))
    s3_endpoint_url: str | None = Field(default=None, description="MinIO, moto, R2...")
    price_per_prediction_usd: float | None = Field(
        default=None, description="What one prediction costs; puts cost_usd on the log."
    )
    daily_budget_usd: float | None = Field(
        default=None, description="Refuse submissions past this spend per UTC day."
    )
    analysis_in_processes: bool | None = Field(
        default=None, description="Mesh analysis in worker processes (empty: from 32 in flight)."
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        options = self.model_dump(exclude={"name", "images", "store", "api_key"})
        return build_mesh_defs(
            self.name,
            images=_from_project(self.images, context.project_root),
            store=_from_project(self.store, context.project_root),
            api_key=(self.api_key or ApiKey(env_var=API_KEY_ENV)).for_resource(),
            **options,
        )


def _from_project(location: str, root: Path) -> str:
    if "://" in location or Path(location).is_absolute():
        return location
    return str((root / location).resolve())
