"""Three processes materializing overlapping partitions at once, sharing one store and log.

Each process is a separate Dagster instance (its own DAGSTER_HOME: SQLite is not shared across
processes) over the same images and the same mesh store, on a folder and on moto's S3. A proxy
in front of the emulator holds every image upload until all of them have arrived, then lets
them through together: so the processes claim the same pictures within milliseconds of each
other (without this barrier each would find the others' claims already made, and a create that
is not exclusive would go unnoticed). The emulator then holds every prediction `processing`
until each process is waiting on each of its partitions, so every prediction is shared for
real. Then, from what the processes left:

- every picture was submitted once (the emulator counts), whoever won its claim;
- every partition of every process has its mesh, and Dagster recorded it in that process;
- the log holds exactly one row per partition per process: the outcome each process saw,
  `completed` for the claim's winner and for the followers that waited on its prediction
  (the log has no "resumed" column: a follower's row names the same prediction id, and the
  run's `wavespeed/predictions_submitted` tag tells who paid); no row_id twice in any file;
- every file in the store parses (GLB, PNG, JPEG, JSON, parquet), no temp or partial file is
  left, no multipart upload is left open, and no submit marker is left in flight.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hunyuan_assets.client import DEFAULT_MODEL
from hunyuan_assets.core.glb import inspect_glb
from hunyuan_assets.core.records import PredictionRecords, record_prefix
from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets.core.store import LocalMeshStore, MeshStore, S3MeshStore
from hunyuan_assets_tests.api_proxy import ApiProxy
from hunyuan_assets_tests.helpers import MESHES, NAME, sha256_of

pytestmark = pytest.mark.slow

# Partition -> the sample it is a copy of: five pictures, one of them under two names.
IMAGES = {
    "mug.png": "mug.png",
    "duck.png": "duck.png",
    "vase.jpg": "vase.jpg",
    "plant.png": "plant.png",
    "planet.png": "planet.png",
    "mug-copy.png": "mug.png",
}
# What each process materializes: every picture in at least two processes, vase in all three,
# the mug's picture in all three (once under its other name).
PROCESSES = [
    ["mug.png", "duck.png", "vase.jpg"],
    ["duck.png", "vase.jpg", "plant.png", "mug-copy.png"],
    ["vase.jpg", "plant.png", "planet.png", "mug.png"],
]

# test_resume.py's RUNNER, with the pipeline's max_concurrency kept (every partition must be
# in flight at once while the emulator holds predictions): materializes argv in its own
# instance, with the project's pipeline configured from the environment.
RUNNER = textwrap.dedent(
    """
    import dataclasses, logging, os, sys
    import dagster as dg
    from hunyuan_assets.definitions import settings_from_environment
    from hunyuan_assets.integration.backfill import materialize_images
    from hunyuan_assets.integration.factory import build_mesh_pipeline
    from hunyuan_assets.integration.resource import Hunyuan3DResource

    mesh_logger = logging.getLogger("hunyuan_assets.core.mesh_generation")
    mesh_logger.setLevel(logging.INFO)
    mesh_logger.addHandler(logging.StreamHandler(sys.stdout))
    pipeline = build_mesh_pipeline(**settings_from_environment())
    resources = dict(pipeline.resources)
    resources[pipeline.settings.hunyuan3d_resource] = Hunyuan3DResource(
        base_url=os.environ["WAVESPEED_BASE_URL"],
        max_concurrency=pipeline.settings.max_concurrency,
        poll_initial_interval=0.05,
        poll_max_interval=0.2,
    )
    pipeline = dataclasses.replace(pipeline, resources=resources)
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        results = materialize_images(instance, pipeline, sys.argv[1:])
    sys.exit(0 if all(r.success for r in results) else 1)
    """
)


class Process:
    def __init__(self, script: Path, log: Path, env: dict[str, str], keys: list[str]) -> None:
        self.home = Path(env["DAGSTER_HOME"])
        self.keys = keys
        self.out = log.open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *keys],
            env={**os.environ, **env},
            stdout=self.out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self.out.seek(0)
        return self.out.read()

    def waits(self) -> list[str]:
        """'submitted' or 'resumed', for each prediction this process waited on."""
        return re.findall(r"waiting on prediction \S+ \(generation \d+, (\w+),", self.output())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.out.close()


def wait_until(condition: Callable[[], object], what: str, processes: list[Process]) -> None:
    """Poll `condition` under a deadline; fail at once if a process has exited early."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if condition():
            return
        for p in processes:
            if p.proc.poll() is not None:
                pytest.fail(f"a process exited ({p.proc.returncode}) before {what}:\n{p.output()}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}:\n" + "\n---\n".join(p.output() for p in processes))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name, sample in IMAGES.items():
        shutil.copy(SAMPLES_DIR / sample, folder / name)
    return folder


@pytest.fixture(params=["folder", "s3"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, MeshStore, dict]:
    """The store every process shares: its location, a store to inspect it, extra env."""
    if request.param == "folder":
        root = tmp_path / "store"
        return str(root), LocalMeshStore(root), {}
    client = request.getfixturevalue("s3_client")
    bucket = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("moto_endpoint")
    store = S3MeshStore(client, bucket, "shared")
    return f"s3://{bucket}/shared", store, {"HUNYUAN_S3_ENDPOINT_URL": endpoint}


@pytest.fixture
def started() -> Iterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    for p in processes:  # a failed test leaves nothing running
        p.stop()


@pytest.fixture
def proxy(emulator) -> Iterator[ApiProxy]:
    server = ApiProxy(emulator.base_url)
    yield server
    server.close()


def test_overlapping_processes_share_one_store_without_loss_or_double_pay(
    emulator,
    images: Path,
    shared_store,
    started: list[Process],
    proxy: ApiProxy,
    tmp_path: Path,
) -> None:
    location, store, extra_env = shared_store
    proxy.hold(lambda method, path: method == "PUT" and path.startswith("/_emulator/uploads/"))
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    emulator.configure(hold=True)
    for n, keys in enumerate(PROCESSES):
        home = tmp_path / f"home-{n}"
        home.mkdir()
        env = {
            "WAVESPEED_BASE_URL": proxy.base_url,
            "HUNYUAN_NAME": NAME,
            "HUNYUAN_IMAGES": str(images),
            "HUNYUAN_STORE": location,
            "HUNYUAN_MAX_CONCURRENCY": "4",  # every partition in flight while the emulator holds
            "DAGSTER_HOME": str(home),
            **extra_env,
        }
        started.append(Process(script, tmp_path / f"process-{n}.log", env, keys))

    uploads = sum(map(len, PROCESSES))
    wait_until(lambda: proxy.held() == uploads, "every upload to reach the proxy", started)
    proxy.release()  # every process registers its images at once, and claims them at once

    def all_waiting() -> bool:
        return all(len(p.waits()) == len(p.keys) for p in started)

    wait_until(all_waiting, "every process to wait on each of its predictions", started)
    pictures = {sha256_of(images / key) for key in IMAGES}
    assert emulator.stats()["submissions"] == len(pictures) == 5
    states = emulator.stats()["predictions"]  # `created` for a task's first moments
    assert states["created"] + states["processing"] == 5
    emulator.configure(hold=False)
    for p in started:
        assert p.proc.wait(timeout=180) == 0, p.output()

    # One submission per picture, and the processes agree on who paid.
    assert emulator.stats()["submissions"] == 5
    waits = Counter(word for p in started for word in p.waits())
    assert waits == {"submitted": 5, "resumed": sum(map(len, PROCESSES)) - 5}
    contested = sum(p.output().count("to submit generation") for p in started)
    print(f"\n{contested} wait(s) on another process's claim before its prediction id existed")

    # Every partition of every process has its mesh, recorded in that process's instance.
    run_ids: dict[str, list[str]] = {}
    paid = 0
    for p in started:
        with dg.DagsterInstance.from_config(str(p.home)) as instance:
            [run] = instance.get_runs()
            assert run.is_success
            assert set(instance.get_materialized_partitions(MESHES)) == set(p.keys)
            paid += int(run.tags["wavespeed/predictions_submitted"])
            assert run.tags["wavespeed/failed"] == "0"
            run_ids[run.run_id] = p.keys
    assert paid == 5
    records = PredictionRecords(store)
    prediction_of = {}
    for sha in pictures:
        record = records.latest(record_prefix(sha, DEFAULT_MODEL))
        assert record is not None and record.state == "completed" and record.generation == 1
        assert store.exists(record.mesh_key or "")
        prediction_of[sha] = record.prediction_id

    # The log: one row per partition per process, naming the picture's one prediction.
    rows = log_rows(store)
    assert len({r["row_id"] for r in rows}) == len(rows) == sum(map(len, PROCESSES))
    seen = Counter((r["run_id"], r["partition_key"]) for r in rows)
    assert seen == Counter((run, key) for run, keys in run_ids.items() for key in keys)
    for row in rows:
        assert row["status"] == "completed" and row["attempt"] == 1, row
        assert row["prediction_id"] == prediction_of[sha256_of(images / row["partition_key"])]

    # Every file whole, nothing half-written left behind.
    assert_every_file_parses(store)
    assert leftovers(store) == []
    assert store.list_keys("submits/") == []  # no submit left in flight or uncertain


def log_rows(store: MeshStore) -> list[dict]:
    """Every row of every log file, read file by file (PredictionLog.read would hide a
    duplicated row_id, which is what this looks for)."""
    rows = []
    for key in store.list_keys("prediction_log/"):
        assert key.endswith(".parquet"), key  # no compaction ran: no journal or temp
        rows += pq.read_table(io.BytesIO(store.get_bytes(key) or b"")).to_pylist()
    return rows


def assert_every_file_parses(store: MeshStore) -> None:
    kinds: Counter[str] = Counter()
    for key in store.list_keys():
        data = store.get_bytes(key)
        assert data is not None, key
        name = key.rsplit("/", 1)[-1]
        if name.endswith(".glb"):
            assert inspect_glb(data).faces > 0, key
        elif name.endswith((".png", ".jpg")):
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        elif name.endswith(".json"):
            json.loads(data)
        elif name.endswith(".parquet"):
            pq.read_table(io.BytesIO(data))
        elif key.startswith("prediction_ids/"):
            assert data == b"", key  # an index entry: its name is its content
        else:
            pytest.fail(f"a store file of a kind this test does not know: {key}")
        kinds[name.rsplit(".", 1)[-1] if "." in name else "index"] += 1
    assert kinds["glb"] == 5 and kinds["png"] >= 5 and kinds["parquet"] >= 1


def leftovers(store: MeshStore) -> list[str]:
    """Temp and partial files (that list_keys would not show), and open multipart uploads."""
    if isinstance(store, LocalMeshStore):
        found = [str(p) for p in store.root.rglob("*") if p.is_file()]
        listed = {str(store.path_for(key)) for key in store.list_keys()}
        return sorted(set(found) - listed)
    assert isinstance(store, S3MeshStore)
    objects = store.client.list_objects_v2(Bucket=store.bucket).get("Contents", [])
    keys = [o["Key"] for o in objects if not o["Key"].startswith(f"{store.prefix}/")]
    keys += [o["Key"] for o in objects if re.search(r"\.(tmp|part)$|/_compacting-", o["Key"])]
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return sorted(keys + [f"open multipart upload {u['Key']}" for u in uploads])
