"""`hunyuan-assets demo`: images -> meshes in one command, on the emulator unless told otherwise."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from hunyuan_assets.core.log import PredictionLog
from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets.integration.backfill import materialize_images, materialize_prediction_log
from hunyuan_assets.integration.compat import (
    single_process_instance_yaml,
    sqlite_databases_held_open,
)
from hunyuan_assets.integration.factory import build_mesh_pipeline
from hunyuan_assets.integration.lineage import latest_materializations

DEMO_PIPELINE = "demo"
SUMMARY_CHUNK = 100  # images whose materializations the summary reads at once


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
        "--submits-in-flight",
        type=int,
        default=1,
        help="submits awaiting their answer at once (Hunyuan3DResource.max_submits_in_flight)",
    )
    demo.add_argument(
        "--latency", type=float, default=1.0, help="emulated prediction time in seconds"
    )
    demo.add_argument(
        "--log-level",
        default="CRITICAL",
        help="Dagster console log level (the summary says why each failed image failed; ERROR "
        "adds Dagster's failure events with their stack traces, DEBUG shows every event)",
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
    if not (home / "dagster.yaml").exists():  # a new demo home; never replace a user's own
        (home / "dagster.yaml").write_text(single_process_instance_yaml(str(home)))
    store = args.store or str(home / "hunyuan_store")
    with (
        _api_base_url(args.latency) as base_url,
        dg.DagsterInstance.from_config(str(home)) as instance,
        sqlite_databases_held_open(str(home)),  # ~2 ms less per Dagster event
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
            max_submits_in_flight=args.submits_in_flight,
            s3_endpoint_url=os.environ.get("HUNYUAN_S3_ENDPOINT_URL") or None,
        )
        images = pipeline.resources[pipeline.settings.images_resource]
        listing = images.open().scan()
        refs = listing.images
        for path, why in listing.skipped:  # never silently ignored
            print(f"skipped:    {path}: {why}")
        if not refs:
            print(f"no images found in {args.images}", file=sys.stderr)
            return 2
        keys = [ref.partition_key for ref in refs]
        quiet = {"loggers": {"console": {"config": {"log_level": args.log_level}}}}
        results = materialize_images(instance, pipeline, keys, run_config=quiet)
        log_result = materialize_prediction_log(instance, pipeline, run_config=quiet)
        ok = all(r.success for r in results) and log_result.success
        mesh_store = pipeline.resources[pipeline.settings.mesh_store_resource]
        meshes = pipeline.settings.meshes_key
        log = mesh_store.prediction_log()
        failed = _print_summary(instance, meshes, keys, store, log, _run_error(results))
    return 0 if ok and not failed else 1


def _print_summary(
    instance: dg.DagsterInstance,
    meshes: dg.AssetKey,
    keys: list[str],
    store: str,
    log: PredictionLog,
    run_error: str | None = None,
) -> int:
    """One line per image from its latest mesh materialization, or why it has none (the last
    error the prediction log holds for it, else the error the run failed with); returns how
    many have none. Read in chunks: a materialization's metadata holds its thumbnail (~4 KB),
    16 MB at 1,000 images."""
    errors: dict[str, str] | None = None
    store_prefix = f"{Path(store).resolve().as_uri()}/" if "://" not in store else f"{store}/"
    failed = 0
    print(f"\n{'image':<28} {'status':<10} {'faces':>7} {'wall s':>7}  mesh (in the store)")
    events: dict = {}
    for index, key in enumerate(keys):
        if index % SUMMARY_CHUNK == 0:
            events = latest_materializations(instance, meshes, keys[index : index + SUMMARY_CHUNK])
        event = events.get(key)
        if event is None:
            failed += 1
            errors = _last_errors(log) if errors is None else errors
            fallback = f"the run failed: {run_error}" if run_error else "no error logged"
            why = _one_line(errors.get(key) or f"{fallback}; run with --log-level ERROR")
            print(f"{key:<28} {'FAILED':<10} {'':>7} {'':>7}  {why}")
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


def _last_errors(log: PredictionLog) -> dict[str, str]:
    """partition -> the error of its latest log row, where that row has one. The log's errors
    never hold the API key or image data (PredictionLogRow's rule), so they can be shown."""
    rows = log.read()  # oldest first
    latest = rows.drop_duplicates("partition_key", keep="last").dropna(subset=["error"])
    return dict(zip(latest["partition_key"], latest["error"].astype(str), strict=True))


def _run_error(results: list[dg.ExecuteInProcessResult]) -> str | None:
    """What the first failed step ended with (its innermost cause, past Dagster's retry
    wrapper), for the images the prediction log says nothing about: the run failed before
    their predictions (a store it cannot write, a setting the API refused)."""
    for result in results:
        for event in result.get_step_failure_events():
            error = event.step_failure_data.error
            while error is not None and error.cause is not None:
                error = error.cause
            if error is not None:
                return error.message.strip()
    return None


def _one_line(text: str, width: int = 110) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def console_main() -> int:
    """The `hunyuan-assets` command: `main`, then a quick exit. At exit CPython collects
    the whole heap once more (~1 s after 64 images, ~2.3 s after 384, most of a demo's
    Dagster objects being cyclic); freezing it first leaves that to the OS, which frees
    the process's memory at once anyway."""
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(console_main())
