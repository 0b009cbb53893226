"""PredictionLog: many one-row appends, read(), compact(), read() again.

The assets append one row per prediction outcome, and each append writes one new parquet
file, so a busy day leaves hundreds of tiny files until the compaction schedule merges them.
This measures what that costs a reader and what compaction buys back, on a local folder and
on S3 (moto's server mode on loopback, a real HTTP S3 endpoint; skip it with --no-s3).

    python bench/bench_log.py [--appends 500] [--reads 3] [--no-s3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import Timer, machine, quiet, report, table, temp_dir


def _row(i: int, now: datetime):
    from hunyuan_assets.core.log import PredictionLogRow

    sha = uuid.uuid4().hex * 2
    submitted = now - timedelta(seconds=120)
    return PredictionLogRow(
        partition_key=f"photos__{i:05d}.png",
        image_uri=f"s3://bucket/photos/{i:05d}.png",
        image_sha256=sha,
        prediction_id=uuid.uuid4().hex,
        model="wavespeed-ai/hunyuan3d/v2.1",
        status="completed",
        submitted_at=submitted,
        completed_at=now,
        inference_ms=95_000 + i,
        wall_ms=120_000 + i,
        polls=10,
        attempt=1,
        has_nsfw_contents=[False],
        nsfw=False,
        output_url=f"https://cdn.example/outputs/{i}/mesh.glb",
        mesh_uri=f"s3://bucket/meshes/{sha[:2]}/{sha}/wavespeed-ai--hunyuan3d--v2.1/mesh.glb",
        mesh_bytes=750_000,
        vertices=12_000,
        faces=24_000,
        run_id=str(uuid.uuid4()),
        code_version="1",
    )


def _files(store, prefix: str) -> int:
    return sum(1 for key in store.list_keys(f"{prefix}/") if key.endswith(".parquet"))


def _measure(name: str, store, appends: int, reads: int) -> dict:
    from hunyuan_assets.core.log import PredictionLog

    log = PredictionLog(store)
    now = datetime.now(UTC)
    rows = [_row(i, now) for i in range(appends)]
    with Timer() as append_t:
        for row in rows:
            log.append([row])
    files_before = _files(store, log.prefix)

    def timed_reads(times: int) -> tuple[float, int]:
        seconds, count = [], 0
        for _ in range(times):
            with Timer() as t:
                frame = log.read()
            seconds.append(t.seconds)
            count = len(frame)
        return statistics.median(seconds), count

    read_before, rows_before = timed_reads(reads)
    with Timer() as compact_t:
        compaction = log.compact()
    files_after = _files(store, log.prefix)
    # Reads of the compacted log take milliseconds: take more of them for a steadier median.
    read_after, rows_after = timed_reads(reads * 5)
    if rows_before != appends or rows_after != appends:
        raise SystemExit(f"{name}: read {rows_before}/{rows_after} rows, expected {appends}")
    return {
        "name": name,
        "append_s": append_t.seconds,
        "files_before": files_before,
        "read_before": read_before,
        "compact_s": compact_t.seconds,
        "files_merged": compaction.files_merged,
        "files_after": files_after,
        "read_after": read_after,
    }


def _s3_store(bucket_prefix: str):
    """A moto S3 server on loopback and an S3MeshStore on a fresh bucket in it."""
    import boto3
    from moto.server import ThreadedMotoServer

    from hunyuan_assets.core.store import S3MeshStore

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",  # moto accepts any credentials
        aws_secret_access_key="testing",
    )
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    return server, S3MeshStore(client, bucket, bucket_prefix, endpoint_url=endpoint)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=500, help="one-row appends")
    parser.add_argument("--reads", type=int, default=3, help="reads per measurement (median)")
    parser.add_argument("--no-s3", action="store_true", help="local folder only")
    args = parser.parse_args(argv)
    quiet()
    from hunyuan_assets.core.store import LocalMeshStore

    started = time.perf_counter()
    results = []
    with temp_dir("bench-log-") as tmp:
        results.append(
            _measure("local folder", LocalMeshStore(Path(tmp) / "store"), args.appends, args.reads)
        )
    if not args.no_s3:
        server, store = _s3_store("store")
        try:
            results.append(_measure("S3 (moto server)", store, args.appends, args.reads))
        finally:
            server.stop()
    total = time.perf_counter() - started

    n = args.appends
    rows, ratios = [], []
    for r in results:
        rows.append(
            [
                r["name"],
                f"{r['append_s'] * 1000 / n:.1f}",
                f"{r['files_before']}",
                f"{r['read_before'] * 1000:.0f}",
                f"{r['compact_s'] * 1000:.0f}",
                f"{r['files_after']}",
                f"{r['read_after'] * 1000:.1f}",
                f"{n / r['read_before']:,.0f} -> {n / r['read_after']:,.0f}",
            ]
        )
        ratios.append(
            [
                f"{r['name']}: read() after compact() vs before",
                f"{r['read_before'] / r['read_after']:.1f}x faster",
            ]
        )
    body = table(
        [
            "store",
            "append ms (1 row)",
            "files",
            f"read() ms, {n} rows",
            "compact() ms",
            "files after",
            "read() ms after",
            "rows / s read",
        ],
        rows,
    )
    summary = table(["comparison", "ratio"], ratios)
    notes = [
        f"{n} appends of one row each (one parquet file per append, as the assets do), then "
        f"read() (median of {args.reads}), compact(), read() again (median of "
        f"{args.reads * 5}); {machine()}; whole "
        f"benchmark {total:.0f} s.",
        "read() cost is dominated by the number of files (the same rows in one file read in "
        "milliseconds): compaction, the daily schedule, keeps readers fast however many "
        "predictions a day logs. compact() reads every input one request at a time and "
        "deletes them in batches (S3 DeleteObjects, 1,000 keys a request), so on S3 it costs "
        "~1 request per file plus the merged write.",
    ]
    text = report("Prediction log: appends, reads, compaction", body + "\n\n" + summary, notes)
    print(text)
    return text


if __name__ == "__main__":
    main()
