"""One Dagster run per image (a helper process of bench_vs_sdk.py; not a benchmark itself).

    python bench/_per_partition.py IMAGES_DIR HOME --concurrency C

The way a user gets there without single-run backfills: each partition is its own in-process
run, one after another, against WAVESPEED_BASE_URL.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import dagster as dg  # noqa: E402

from hunyuan_assets.integration.backfill import add_image_partitions  # noqa: E402
from hunyuan_assets.integration.factory import build_mesh_pipeline  # noqa: E402

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("images", type=Path)
    parser.add_argument("home", type=Path)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    args.home.mkdir(parents=True, exist_ok=True)
    pipeline = build_mesh_pipeline(
        "bench",
        images=str(args.images),
        store=str(args.home / "store"),
        base_url=os.environ["WAVESPEED_BASE_URL"],
        max_concurrency=args.concurrency,
    )
    images = pipeline.resources[pipeline.settings.images_resource]
    keys = [ref.partition_key for ref in images.open().list_images()]
    selection = [pipeline.settings.source_images_key, pipeline.settings.meshes_key]
    failed = 0
    with dg.DagsterInstance.from_config(str(args.home)) as instance:
        add_image_partitions(instance, pipeline, keys)
        for key in keys:
            result = dg.materialize(
                pipeline.assets,
                selection=selection,
                partition_key=key,
                instance=instance,
                resources=pipeline.resources,
                run_config=QUIET,
                raise_on_error=False,
            )
            failed += not result.success
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
