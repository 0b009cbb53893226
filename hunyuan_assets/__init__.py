"""hunyuan_assets: images -> textured 3D meshes with WaveSpeed AI's Hunyuan3D v2.1, in Dagster.

Adopt it in your own Dagster project in one of two ways:
  - YAML: `dg scaffold defs hunyuan_assets.MeshesComponent defs/products` (a `defs.yaml`);
  - Python: `build_mesh_defs("products", images="s3://...", store="s3://...")`.
Both build one complete pipeline (assets, checks, jobs, sensor, schedules, resources) whose
names all start with its name, so several sit side by side.

Layers, lowest first (each folder imports only from those above it in this list):
  client/       the WaveSpeed v3 API over httpx (sync + async), Prediction, typed errors; no Dagster
  emulator/     a local WaveSpeed v3 API that makes real GLBs; no Dagster
  core/         images, mesh store, prediction records, parquet log, GLB checks; no Dagster
  integration/  the Dagster layer: resources, assets, sensors, schedules, factory, component

Names are imported on first use (PEP 562), so the client and the emulator load without Dagster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hunyuan_assets.client import (
        AsyncHunyuan3DClient,
        ClientSettings,
        Hunyuan3DClient,
        Prediction,
        SubmissionUncertainError,
        WaveSpeedError,
    )
    from hunyuan_assets.core.log import PredictionLog
    from hunyuan_assets.core.store import MeshStore, open_mesh_store
    from hunyuan_assets.emulator import EmulatorServer
    from hunyuan_assets.integration.component import MeshesComponent
    from hunyuan_assets.integration.factory import build_mesh_defs
    from hunyuan_assets.integration.locations import ImagesResource, MeshStoreResource
    from hunyuan_assets.integration.resource import Hunyuan3DResource

_PUBLIC = {
    # adopting the integration
    "build_mesh_defs": "integration.factory",
    "MeshesComponent": "integration.component",
    # Dagster resources, for assets of your own
    "Hunyuan3DResource": "integration.resource",
    "ImagesResource": "integration.locations",
    "MeshStoreResource": "integration.locations",
    # the WaveSpeed client and its errors (no Dagster)
    "Hunyuan3DClient": "client",
    "AsyncHunyuan3DClient": "client",
    "ClientSettings": "client",
    "Prediction": "client",
    "WaveSpeedError": "client",
    "SubmissionUncertainError": "client",
    # reading what was made
    "MeshStore": "core.store",
    "open_mesh_store": "core.store",
    "PredictionLog": "core.log",
    # offline
    "EmulatorServer": "emulator",
}

__all__ = [
    "AsyncHunyuan3DClient", "ClientSettings", "EmulatorServer", "Hunyuan3DClient",
    "Hunyuan3DResource", "ImagesResource", "MeshStore", "MeshStoreResource", "MeshesComponent",
    "Prediction", "PredictionLog", "SubmissionUncertainError", "WaveSpeedError",
    "build_mesh_defs", "open_mesh_store",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'hunyuan_assets' has no attribute {name!r}")
    return getattr(importlib.import_module(f"hunyuan_assets.{module}"), name)


def __dir__() -> list[str]:
    # `dg list components` finds MeshesComponent by dir() on this module (registry entry point).
    return sorted({*globals(), *_PUBLIC})
