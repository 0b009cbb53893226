"""`hunyuan-assets demo`: images -> meshes in one command, on the emulator unless told otherwise."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

# The assets use per-partition checks and single-run backfills on purpose (preview/beta in
# Dagster 1.13); the demo's user should see the meshes, not those notices.
for _category in (dg.PreviewWarning, dg.BetaWarning, dg.SupersessionWarning):
    warnings.filterwarnings("ignore", category=_category)

from hunyuan_assets.core.sources import SAMPLES_DIR  # noqa: E402
from hunyuan_assets.integration.backfill import (  # noqa: E402
    materialize_images,
    materialize_prediction_log,
)
from hunyuan_assets.integration.factory import build_mesh_pipeline  # noqa: E402
from hunyuan_assets.integration.lineage import latest_materializations  # noqa: E402

DEMO_PIPELINE = "demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hunyuan-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="Materialize meshes for a folder or S3 prefix of images."
    )
    demo.add_argument("--images", default=str(SAMPLES_DIR), help="folder or s3://bucket/prefix")
    demo.add_argument("--home", default=".hunyuan_demo", help="Dagster home (created if missing)")
    demo.add_argument("--store", default=None, help="mesh store (default: <home>/hunyuan_store)")
    demo.add_argument("--concurrency", type=int, default=2, help="predictions in flight at once")
    demo.add_argument(
        "--latency", type=float, default=1.0, help="emulated prediction time in seconds"
    )
    demo.add_argument(
        "--log-level", default="WARNING", help="Dagster console log level (DEBUG shows every event)"
    )
    args = parser.parse_args(argv)
    return run_demo(args)


@contextlib.contextmanager
def _api_base_url(latency: float) -> Iterator[str]:
    """The configured API, or an emulator started for the length of the demo."""
    configured = os.environ.get("WAVESPEED_BASE_URL")
    if configured:
        yield configured
        return
    from hunyuan_assets.emulator import EmulatorServer

    with EmulatorServer(latency=latency) as server:
        yield server.base_url


def run_demo(args: argparse.Namespace) -> int:
    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    store = args.store or str(home / "hunyuan_store")
    with (
        _api_base_url(args.latency) as base_url,
        dg.DagsterInstance.from_config(str(home)) as instance,
    ):
        print(f"API:        {base_url}")
        print(f"images:     {args.images}")
        print(f"dagster:    {home}")
        pipeline = build_mesh_pipeline(
            DEMO_PIPELINE,
            images=args.images,
            store=store,
            base_url=base_url,
            max_concurrency=args.concurrency,
            s3_endpoint_url=os.environ.get("HUNYUAN_S3_ENDPOINT_URL") or None,
        )
        images = pipeline.resources[pipeline.settings.images_resource]
        refs = images.open().list_images()
        if not refs:
            print(f"no images found in {args.images}", file=sys.stderr)
            return 2
        keys = [ref.partition_key for ref in refs]
        quiet = {"loggers": {"console": {"config": {"log_level": args.log_level}}}}
        results = materialize_images(instance, pipeline, keys, run_config=quiet)
        log_result = materialize_prediction_log(instance, pipeline, run_config=quiet)
        ok = all(r.success for r in results) and log_result.success
        failed = _print_summary(instance, pipeline.settings.meshes_key, keys, store)
    return 0 if ok and not failed else 1


def _print_summary(
    instance: dg.DagsterInstance, meshes: dg.AssetKey, keys: list[str], store: str
) -> int:
    """One line per image from its latest mesh materialization; returns how many have none."""
    events = latest_materializations(instance, meshes, keys)
    store_prefix = f"{Path(store).resolve().as_uri()}/" if "://" not in store else f"{store}/"
    failed = 0
    print(f"\n{'image':<28} {'status':<10} {'faces':>7} {'wall s':>7}  mesh (in the store)")
    for key in keys:
        event = events.get(key)
        if event is None:
            failed += 1
            print(f"{key:<28} {'FAILED':<10} {'':>7} {'':>7}  see the run log and prediction log")
            continue
        meta = event.metadata
        where = str(meta.get("mesh_uri", "")).removeprefix(store_prefix)
        wall = (meta.get("wall_ms") or 0) / 1000
        status, faces = meta.get("status", ""), meta.get("faces", 0)
        print(f"{key:<28} {status:<10} {faces:>7} {wall:>7.1f}  {where}")
    print(f"\nstore:          {store}  (preview.png beside each mesh.glb)")
    print(f"prediction log: {store}/prediction_log  (pandas.read_parquet)")
    print(f"{len(keys) - failed} of {len(keys)} image(s) have a mesh")
    return failed


if __name__ == "__main__":
    sys.exit(main())
