"""The parquet prediction log: schema, append/read on a folder and on S3, concurrency, compaction
and its crash recovery (a real SIGKILL in a subprocess), and keeping secrets out."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from hunyuan_assets.core.log import LOG_SCHEMA, PredictionLog, PredictionLogRow, summarize
from hunyuan_assets.core.store import LocalMeshStore, MeshStore, S3MeshStore

SHA = "c" * 64
DAY1 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY2 = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)

_PRELUDE = """
import sys
from hunyuan_assets.core.log import PredictionLog, PredictionLogRow
from hunyuan_assets.core.store import open_mesh_store
"""

_WRITER = """
import os
store = open_mesh_store(sys.argv[1], endpoint_url=os.environ.get("TEST_S3_ENDPOINT"))
log = PredictionLog(store)
worker, appends = sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()  # start gate: every writer starts appending at once
for i in range(appends):
    log.append([PredictionLogRow(partition_key=f"{worker}-{i}-{j}", model="m", status="completed",
                                 row_id=f"{worker}-{i}-{j}") for j in range(2)])
"""

_CRASHING_COMPACT = """
import os, signal
class CrashingLog(PredictionLog):
    def _checkpoint(self, step):
        if step == sys.argv[2]:
            os.kill(os.getpid(), signal.SIGKILL)
store = open_mesh_store(sys.argv[1], endpoint_url=os.environ.get("TEST_S3_ENDPOINT"))
CrashingLog(store).compact()
"""


def _python(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _PRELUDE + script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def make_row(i: int = 0, **overrides: object) -> PredictionLogRow:
    values: dict[str, object] = {
        "partition_key": f"img-{i:04d}.png",
        "image_uri": f"file:///images/img-{i:04d}.png",
        "image_sha256": f"{i:064x}",
        "prediction_id": f"pred-{i}",
        "model": "wavespeed-ai/hunyuan3d/v2.1",
        "status": "completed",
        "submitted_at": DAY1,
        "completed_at": DAY1 + timedelta(seconds=30),
        "inference_ms": 1000 + i,
        "wall_ms": 2000 + i,
        "polls": 3,
        "has_nsfw_contents": [False],
        "output_url": f"https://cdn.example/outputs/{i}/mesh.glb",
        "mesh_uri": f"s3://meshes/{i}/mesh.glb",
        "mesh_bytes": 123_456 + i,
        "vertices": 5000,
        "faces": 9000,
        "run_id": "run-1",
        "logged_at": DAY1 + timedelta(seconds=i),
        "code_version": "1",
        "pipeline": "products",
        "cost_usd": 0.02,
        "error_type": None,
    }
    values.update(overrides)
    return PredictionLogRow(**values)  # type: ignore[arg-type]


def _store_uri_env(store: MeshStore) -> tuple[str, dict[str, str]]:
    """How a subprocess opens the same store (moto endpoint and credentials via env)."""
    if isinstance(store, S3MeshStore):
        endpoint = store.client.meta.endpoint_url
        return store.root_uri, {
            "TEST_S3_ENDPOINT": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    return str(store.root_uri), {}


def _log_files(store: MeshStore) -> list[str]:
    return [k.rpartition("/")[2] for k in store.list_keys("prediction_log/")]


def _raw_pandas(store: MeshStore) -> pd.DataFrame:
    """What a person with pandas sees, without PredictionLog's de-duplication."""
    fs, path = store.arrow_location("prediction_log")
    return pd.read_parquet(path, filesystem=fs)


# -- schema and rows --------------------------------------------------------------------------


def test_row_fields_are_the_schema_columns() -> None:
    assert [f.name for f in dataclasses.fields(PredictionLogRow)] == LOG_SCHEMA.names


def test_schema_types_are_explicit() -> None:
    ts = pa.timestamp("us", tz="UTC")
    for name in ("submitted_at", "completed_at", "logged_at"):
        assert LOG_SCHEMA.field(name).type == ts
    assert LOG_SCHEMA.field("has_nsfw_contents").type.value_type == pa.bool_()
    for name in ("inference_ms", "wall_ms", "polls", "attempt", "mesh_bytes", "vertices", "faces"):
        assert LOG_SCHEMA.field(name).type == pa.int64()
    required = {f.name for f in LOG_SCHEMA if not f.nullable}
    assert required == {
        "partition_key",
        "model",
        "status",
        "polls",
        "attempt",
        "has_nsfw_contents",
        "nsfw",
        "row_id",
        "logged_at",
        "quarantined",
    }


def test_rows_reject_naive_times_and_bad_values() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_row(logged_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        make_row(submitted_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="status"):
        make_row(status="")
    with pytest.raises(ValueError, match="inference_ms"):
        make_row(inference_ms=1.5)
    with pytest.raises(ValueError, match="faces"):
        make_row(faces=True)


def test_row_defaults_and_normalisation() -> None:
    row = PredictionLogRow(
        partition_key="k", model="m", status="failed", polls=None, has_nsfw_contents=(True, 0)
    )
    assert row.polls == 0 and row.attempt == 1
    assert row.has_nsfw_contents == [True, False]
    assert row.logged_at.tzinfo is not None and len(row.row_id) == 36
    assert row.row_id != PredictionLogRow(partition_key="k", model="m", status="x").row_id


def test_written_files_have_exactly_the_log_schema(tmp_path: Path) -> None:
    store = LocalMeshStore(tmp_path)
    key = PredictionLog(store).append([make_row(1), make_row(2, error="boom", wall_ms=None)])
    assert key is not None
    assert key.startswith("prediction_log/date=2026-03-01/part-") and key.endswith(".parquet")
    schema = pq.read_schema(store.path_for(key))
    assert schema.equals(LOG_SCHEMA)  # names, types, nullability and order


# -- append and read ---------------------------------------------------------------------------


def test_read_of_an_empty_log_has_the_schema_columns(store: MeshStore) -> None:
    frame = PredictionLog(store).read()
    assert frame.empty
    assert list(frame.columns) == LOG_SCHEMA.names
    assert str(frame["logged_at"].dtype) == "datetime64[us, UTC]"
    assert PredictionLog(store).append([]) is None


_POOLS_KEPT_ALIVE: list[pa.MemoryPool] = []


def test_reading_the_log_keeps_its_tables_out_of_pyarrows_default_pool(tmp_path: Path) -> None:
    """The default pool (mimalloc) keeps what a read used as RSS: at 1,000 rows, +25 MB for a
    400 KB log. The read goes through the C allocator instead, without changing the default."""
    log = PredictionLog(LocalMeshStore(tmp_path))
    log.append([make_row(i, error=f"error {i}" * 20) for i in range(1, 400)])
    log.append([make_row(i) for i in range(400, 800)])
    default = pa.default_memory_pool()
    watched = pa.proxy_memory_pool(default)
    # Kept alive for the whole process: buffers it handed out may be freed through it later.
    _POOLS_KEPT_ALIVE.append(watched)
    pa.set_memory_pool(watched)
    try:
        frame = log.read()
    finally:
        pa.set_memory_pool(default)
    assert len(frame) == 799 and frame["logged_at"].is_monotonic_increasing
    # The parquet decoder's own scratch (~100 KB here) still comes from the default pool;
    # the tables (~800 KB of it before) do not.
    assert watched.max_memory() < 256 * 1024


def test_append_read_round_trip(store: MeshStore) -> None:
    log = PredictionLog(store)
    rows = [
        make_row(1),
        make_row(
            2,
            status="failed",
            error="Invalid image",
            error_type="PredictionFailedError",
            wall_ms=None,
            mesh_bytes=None,
        ),
        make_row(3, has_nsfw_contents=[True, False], nsfw=True, quarantined=True),
        make_row(
            4,
            status="reused",
            prediction_id=None,
            reused_from="img-0001.png",
            polls=0,
            cost_usd=None,
            pipeline=None,
        ),
        make_row(5, image_uri=None, image_sha256=None, submitted_at=None, completed_at=None),
    ]
    log.append(rows[:2])
    log.append(rows[2:])
    frame = log.read()
    assert list(frame.columns) == LOG_SCHEMA.names
    assert frame["row_id"].tolist() == [r.row_id for r in rows]  # oldest first
    back = frame.set_index("row_id")
    for row in rows:
        got = back.loc[row.row_id]
        for name in LOG_SCHEMA.names:
            if name == "row_id":
                continue
            expected, actual = getattr(row, name), got[name]
            if name == "has_nsfw_contents":
                assert list(actual) == expected
            elif expected is None:
                assert pd.isna(actual), name
            else:
                assert actual == expected, (name, actual, expected)
    assert str(frame["mesh_bytes"].dtype) == "Int64"  # nulls do not turn ints into floats
    assert log.location_uri == store.uri_for("prediction_log")


def test_files_from_before_the_pipeline_cost_and_error_type_columns_still_read(tmp_path: Path):
    """Logs written before `pipeline`, `cost_usd` and `error_type` existed read back (and
    compact) with nulls there, next to rows that have them."""
    store = LocalMeshStore(tmp_path)
    log = PredictionLog(store)
    new_key = log.append([make_row(1, error_type="BudgetExceededError")])
    assert new_key is not None
    added = ["pipeline", "cost_usd", "error_type"]
    old = pa.Table.from_pylist([make_row(2).to_record()], schema=LOG_SCHEMA).drop_columns(added)
    pq.write_table(old, store.path_for(new_key).parent / "part-before-costs.parquet")

    for merged in (2, 0):  # read, compact both files into one, read again
        frame = log.read().set_index("partition_key")
        assert list(frame.reset_index().columns) == LOG_SCHEMA.names
        new, before = frame.loc["img-0001.png"], frame.loc["img-0002.png"]
        assert (new["pipeline"], new["cost_usd"], new["error_type"]) == (
            "products",
            0.02,
            "BudgetExceededError",
        )
        assert all(pd.isna(before[name]) for name in added)
        assert before["prediction_id"] == "pred-2"  # the rest of the old row is intact
        assert log.compact().files_merged == merged


def test_rows_are_partitioned_by_utc_date_of_logged_at(store: MeshStore) -> None:
    log = PredictionLog(store)
    # 23:30 at UTC-5 on 1 March is 04:30 UTC on 2 March.
    late = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    log.append([make_row(1, logged_at=DAY1), make_row(2, logged_at=late)])
    keys = store.list_keys("prediction_log/")
    assert [k.split("/")[1] for k in keys] == ["date=2026-03-01", "date=2026-03-02"]
    assert len(log.read()) == 2


def test_merge_joins_only_the_given_files_one_per_day(store: MeshStore) -> None:
    """A run merges the files it appended (`written`), per day; another writer's file of the
    same day is left alone, and every row is read once, as before."""
    log = PredictionLog(store)
    mine: dict[str, list[PredictionLogRow]] = {}
    log.append([make_row(1)], written=mine)
    log.append([make_row(2), make_row(3, logged_at=DAY2)], written=mine)
    log.append([make_row(4)], written=mine)
    others = log.append([make_row(5)])
    log.append([make_row(6, logged_at=DAY2)], written=mine)
    assert len(mine) == 5 and others not in mine
    before = log.read()

    assert log.merge(mine) == 5
    names = sorted(store.list_keys("prediction_log/"))
    day1 = [k for k in names if "date=2026-03-01/" in k]
    day2 = [k for k in names if "date=2026-03-02/" in k]
    assert len(day1) == 2 and others in day1  # its own merged file, and the other writer's
    assert len(day2) == 1 and day2[0].rpartition("/")[2].startswith("compacted-")
    after = log.read()
    assert sorted(after["row_id"]) == sorted(before["row_id"]) and len(after) == 6
    assert log.merge({others: [make_row(5)]}) == 0  # one file of a day: nothing to merge
    with pytest.raises(ValueError, match="not a file of this log"):
        log.merge({"elsewhere/date=2026-03-01/part-x.parquet": [], others: []})


def test_pandas_reads_the_folder_directly(tmp_path: Path) -> None:
    store = LocalMeshStore(tmp_path)
    log = PredictionLog(store)
    log.append([make_row(1), make_row(2)])
    log.append([make_row(3, logged_at=DAY2)])
    # What a crashed writer or compaction can leave behind must not break readers.
    day = tmp_path / "prediction_log" / "date=2026-03-01"
    (day / f".part-x.parquet.{'0' * 32}.tmp").write_bytes(b"PAR1 half written")
    (day / "_compacting-0.parquet").write_bytes(b"PAR1 half written")
    (day / "_compaction-0.json").write_text("{}")
    frame = pd.read_parquet(tmp_path / "prediction_log")
    assert len(frame) == 3
    assert sorted(frame["partition_key"]) == ["img-0001.png", "img-0002.png", "img-0003.png"]
    assert sorted(frame["date"].astype(str).unique()) == ["2026-03-01", "2026-03-02"]
    assert len(log.read()) == 3


def test_a_retried_append_does_not_duplicate_rows(store: MeshStore) -> None:
    log = PredictionLog(store)
    rows = [make_row(1), make_row(2)]
    log.append(rows)
    log.append(rows)  # e.g. the first append succeeded but its caller timed out
    assert len(_raw_pandas(store)) == 4
    assert sorted(log.read()["row_id"]) == sorted(r.row_id for r in rows)


def test_concurrent_writer_processes_lose_no_rows(tmp_path: Path) -> None:
    # A folder is where processes could collide (S3 keys are unique per append anyway).
    store = LocalMeshStore(tmp_path)
    uri, env = _store_uri_env(store)
    writers, appends = 4, 25
    procs = [_python(_WRITER, uri, f"w{w}", str(appends), env=env) for w in range(writers)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            _out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    frame = PredictionLog(store).read()
    expected = {f"w{w}-{i}-{j}" for w in range(writers) for i in range(appends) for j in range(2)}
    assert len(frame) == len(expected) == 200
    assert set(frame["row_id"]) == expected
    assert len(_raw_pandas(store)) == 200
    assert len(_log_files(store)) == writers * appends


def test_concurrent_writer_threads_lose_no_rows(store: MeshStore) -> None:
    log = PredictionLog(store)

    def write(t: int) -> None:
        for i in range(10):
            log.append([make_row(i, row_id=f"t{t}-{i}")])

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert set(log.read()["row_id"]) == {f"t{t}-{i}" for t in range(4) for i in range(10)}


# -- compaction -------------------------------------------------------------------------------


def _fill(log: PredictionLog, per_day: int = 6) -> set[str]:
    ids = set()
    for day in (DAY1, DAY2):
        for i in range(per_day):
            row = make_row(i, logged_at=day + timedelta(minutes=i), row_id=f"{day:%d}-{i}")
            log.append([row])
            ids.add(row.row_id)
    return ids


def test_compaction_merges_each_day_and_keeps_every_row_once(store: MeshStore) -> None:
    log = PredictionLog(store)
    ids = _fill(log)
    log.append([make_row(99, logged_at=datetime(2026, 3, 3, tzinfo=UTC), row_id="lonely")])
    ids.add("lonely")
    before = log.read()

    report = log.compact()
    assert report.partitions == ("2026-03-01", "2026-03-02")  # a single file is left alone
    assert (report.files_merged, report.files_written, report.rows_written) == (12, 2, 12)
    names = _log_files(store)
    assert len(names) == 3
    assert sum(n.startswith("compacted-") for n in names) == 2
    assert not [n for n in names if n.startswith(("_", "."))]  # no journal or temp left
    raw = _raw_pandas(store)
    assert len(raw) == len(ids) and set(raw["row_id"]) == ids
    pd.testing.assert_frame_equal(log.read(), before)

    # Later appends join the compacted file at the next compaction.
    log.append([make_row(7, logged_at=DAY1 + timedelta(hours=1), row_id="late")])
    assert log.compact().files_merged == 2
    assert len(_raw_pandas(store)) == len(ids) + 1
    assert log.compact().files_merged == 0  # idempotent


def test_compaction_drops_duplicate_rows(store: MeshStore) -> None:
    log = PredictionLog(store)
    rows = [make_row(1), make_row(2)]
    log.append(rows)
    log.append(rows)
    report = log.compact()
    assert report.duplicates_dropped == 2
    assert sorted(_raw_pandas(store)["row_id"]) == sorted(r.row_id for r in rows)


# One per recovery branch: roll back (journal only), roll forward (merged file visible, no
# input deleted), roll forward with some inputs already gone. "temp_written" is covered
# in-process below (compact has no cleanup handlers, so an exception leaves the same state).
CRASH_POINTS = ["journal_written", "output_visible", "first_input_deleted"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_compaction_killed_half_way_loses_and_duplicates_nothing(
    tmp_path: Path, point: str
) -> None:
    store = LocalMeshStore(tmp_path)
    _check_crash_recovery(store, point)


def test_compaction_killed_half_way_on_s3(s3_client, s3_bucket: str) -> None:
    _check_crash_recovery(S3MeshStore(s3_client, s3_bucket, "prod"), "output_visible")


def _check_crash_recovery(store: MeshStore, point: str) -> None:
    log = PredictionLog(store)
    ids = _fill(log, per_day=4)
    uri, env = _store_uri_env(store)
    proc = _python(_CRASHING_COMPACT, uri, point, env=env)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, err  # really killed at that point
    leftovers = [n for n in _log_files(store) if n.startswith("_")]
    assert any(n.startswith("_compaction-") for n in leftovers)

    # Before any recovery, PredictionLog.read() is already exact (row_id de-duplication)...
    frame = log.read()
    assert len(frame) == len(ids) and set(frame["row_id"]) == ids
    # ...and a recent journal is left alone by readers: it might belong to a live compaction.
    assert [n for n in _log_files(store) if n.startswith("_")] == leftovers

    report = log.compact()
    assert report.journals_recovered == 1
    names = _log_files(store)
    assert not [n for n in names if n.startswith(("_", "."))]
    assert len(names) == 2  # one compacted file per day
    raw = _raw_pandas(store)
    assert len(raw) == len(ids) and set(raw["row_id"]) == ids
    frame = log.read()
    assert len(frame) == len(ids) and set(frame["row_id"]) == ids


class _Crash(Exception):
    pass


class _CrashingLog(PredictionLog):
    crash_at = "output_visible"

    def _checkpoint(self, step: str) -> None:
        if step == self.crash_at:
            raise _Crash(step)


def test_read_recovers_stale_journals(tmp_path: Path) -> None:
    store = LocalMeshStore(tmp_path)
    ids = _fill(PredictionLog(store), per_day=3)
    with pytest.raises(_Crash):
        _CrashingLog(store).compact()
    assert len(_raw_pandas(store)) > len(ids)  # merged file visible, inputs not yet deleted
    assert len(PredictionLog(store).read()) == len(ids)
    frame = PredictionLog(store, journal_grace_s=0).read()  # the journal is now "old"
    assert len(frame) == len(ids)
    assert not [n for n in _log_files(store) if n.startswith("_")]
    raw = _raw_pandas(store)
    assert len(raw) == len(ids) and set(raw["row_id"]) == ids


def test_merge_writes_the_rows_it_was_given_without_reading_the_files_back(tmp_path) -> None:
    """Reading 504 files back cost a run ~33 MB; the merge writes its writer's own rows. A
    file spoiled after it was written would fail a read back: here it is simply replaced."""
    store = LocalMeshStore(tmp_path)
    log = PredictionLog(store)
    mine: dict[str, list[PredictionLogRow]] = {}
    for i in range(3):
        log.append([make_row(i)], written=mine)
    ids = {row.row_id for rows in mine.values() for row in rows}
    store.path_for(next(iter(mine))).write_bytes(b"PAR1 not parquet")
    assert log.merge(mine) == 3
    [name] = _log_files(store)
    assert name.startswith("compacted-")
    assert set(log.read()["row_id"]) == ids


@pytest.mark.parametrize("point", ["temp_written", "output_visible", "first_input_deleted"])
def test_a_merge_stopped_half_way_loses_and_duplicates_nothing(tmp_path: Path, point) -> None:
    """A run's merge uses the compaction's journal: stopped at any step, readers see every row
    once, and the next compaction finishes or rolls it back."""
    store = LocalMeshStore(tmp_path)
    crashing = _CrashingLog(store)
    crashing.crash_at = point
    mine: dict[str, list[PredictionLogRow]] = {}
    for i in range(4):
        crashing.append([make_row(i)], written=mine)
    ids = {row.row_id for rows in mine.values() for row in rows}
    with pytest.raises(_Crash):
        crashing.merge(mine)
    assert set(PredictionLog(store).read()["row_id"]) == ids
    assert len(PredictionLog(store).read()) == len(ids)
    assert PredictionLog(store).compact().journals_recovered == 1
    [name] = _log_files(store)
    assert name.startswith("compacted-")
    raw = _raw_pandas(store)
    assert len(raw) == len(ids) and set(raw["row_id"]) == ids


def test_recovery_rolls_back_an_invisible_output(tmp_path: Path) -> None:
    store = LocalMeshStore(tmp_path)
    log = PredictionLog(store)
    ids = _fill(log, per_day=3)
    crashing = _CrashingLog(store)
    crashing.crash_at = "temp_written"
    with pytest.raises(_Crash):
        crashing.compact()
    journal_key = next(k for k in store.list_keys("prediction_log/") if "/_compaction-" in k)
    journal = json.loads(store.get_bytes(journal_key) or b"{}")
    assert store.exists(journal["temp"]) and not store.exists(journal["output"])
    assert all(store.exists(k) for k in journal["inputs"])
    raw = _raw_pandas(store)  # the hidden temp is invisible to readers
    assert len(raw) == len(ids) and set(raw["row_id"]) == ids
    log.compact()
    assert not store.exists(journal["temp"]) and not store.exists(journal_key)
    assert set(_raw_pandas(store)["row_id"]) == ids and len(_raw_pandas(store)) == len(ids)


def test_reads_and_appends_during_compaction_see_every_row_once(tmp_path: Path) -> None:
    store = LocalMeshStore(tmp_path)
    log = PredictionLog(store)
    written: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    problems: list[str] = []

    def writer(t: int) -> None:
        for i in range(30):
            row = make_row(i, row_id=f"t{t}-{i}", logged_at=DAY1)
            log.append([row])
            with lock:
                written.append(row.row_id)

    def compactor() -> None:
        while not stop.is_set():
            log.compact()

    def reader() -> None:
        while not stop.is_set():
            with lock:
                must_see = set(written)
            frame = log.read()
            seen = set(frame["row_id"])
            if len(seen) != len(frame):
                problems.append("duplicate rows in read()")
            if not must_see <= seen:
                problems.append(f"lost {len(must_see - seen)} rows")

    writers = [threading.Thread(target=writer, args=(t,)) for t in range(2)]
    others = [threading.Thread(target=compactor), threading.Thread(target=reader)]
    for t in writers + others:
        t.start()
    for t in writers:
        t.join(timeout=60)
    stop.set()
    for t in others:
        t.join(timeout=60)
    assert problems == []
    log.compact()
    raw = _raw_pandas(store)
    assert len(raw) == 60 and set(raw["row_id"]) == set(written)


# -- secrets and summaries ---------------------------------------------------------------------


def test_the_api_key_only_appears_where_a_caller_put_it(tmp_path: Path, api_key: str) -> None:
    assert not {"api_key", "authorization", "token", "secret"} & set(LOG_SCHEMA.names)
    store = LocalMeshStore(tmp_path)
    log = PredictionLog(store)
    os.environ["WAVESPEED_API_KEY"] = api_key  # present in the environment, as in production
    try:
        log.append([make_row(i) for i in range(3)])
    finally:
        del os.environ["WAVESPEED_API_KEY"]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and not any(api_key.encode() in p.read_bytes() for p in files)

    # A caller that (wrongly) puts the key in an error message gets it exactly there.
    leaked = make_row(9, status="failed", error=f"upstream said: Bearer {api_key} rejected")
    key = log.append([leaked])
    assert key is not None and api_key not in key
    assert api_key.encode() in store.path_for(key).read_bytes()  # the scan above can see it
    frame = log.read()
    hits = [
        (row_id, column)
        for column in frame.columns
        for row_id, value in zip(frame["row_id"], frame[column], strict=True)
        if api_key in str(value)
    ]
    assert hits == [(leaked.row_id, "error")]
    assert api_key not in json.dumps(summarize(frame))


def test_summarize() -> None:
    rows = [
        make_row(1, inference_ms=100, wall_ms=1000),
        make_row(2, inference_ms=200, wall_ms=2000, nsfw=True, has_nsfw_contents=[True]),
        make_row(3, inference_ms=300, wall_ms=3000, image_sha256=f"{1:064x}"),
        make_row(4, inference_ms=400, wall_ms=None),
        make_row(5, status="failed", inference_ms=99_999, error="x"),
        make_row(6, status="reused", prediction_id="pred-1", reused_from="img-0001.png"),
    ]
    frame = pd.DataFrame([r.to_record() for r in rows])
    stats = summarize(frame)
    assert stats["rows"] == 6
    assert stats["total_predictions"] == 5  # the reuse shares pred-1
    assert stats["distinct_images"] == 5
    assert stats["counts_by_status"] == {"completed": 4, "failed": 1, "reused": 1}
    assert stats["inference_ms_p50"] == 250.0
    assert stats["inference_ms_p95"] == pytest.approx(385.0)
    assert stats["wall_ms_p50"] == 2000.0
    assert stats["nsfw_rate"] == 0.25
    assert stats["reused"] == 1
    json.dumps(stats)  # plain Python values, ready for Dagster metadata

    empty = summarize(pd.DataFrame())
    assert empty["rows"] == 0 and empty["inference_ms_p50"] is None and empty["nsfw_rate"] == 0.0


def test_summarize_of_what_read_returns(store: MeshStore) -> None:
    log = PredictionLog(store)
    log.append([make_row(i) for i in range(4)])
    stats = log.summarize(log.read())
    assert stats["rows"] == 4 and stats["inference_ms_p50"] == 1001.5


class CountingStore(LocalMeshStore):
    """A real local store that also records which of its reads and writes were called."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: list[str] = []

    def put_bytes(self, key: str, data: bytes) -> str:
        self.calls.append("put_bytes")
        return super().put_bytes(key, data)

    def get_bytes(self, key: str) -> bytes | None:
        self.calls.append("get_bytes")
        return super().get_bytes(key)

    def download_to(self, key: str, dest: Path) -> bool:
        self.calls.append("download_to")
        return super().download_to(key, dest)

    def list_keys(self, prefix: str = "") -> list[str]:
        self.calls.append("list_keys")
        return super().list_keys(prefix)

    def exists(self, key: str) -> bool:
        self.calls.append("exists")
        return super().exists(key)

    def arrow_location(self, prefix: str = "") -> tuple[pafs.FileSystem, str]:
        self.calls.append("arrow_location")
        return super().arrow_location(prefix)


def test_an_append_writes_one_new_file_and_reads_nothing(tmp_path: Path) -> None:
    """What keeps appends cheap however long the log: no read-modify-write, no listing, so
    the 100th append costs what the first did (bench/bench_log.py has the timings)."""
    store = CountingStore(tmp_path)
    log = PredictionLog(store)
    keys = [log.append([make_row(i)]) for i in range(100)]
    assert store.calls == ["put_bytes"] * 100
    assert len(set(keys)) == 100 and len(_log_files(store)) == 100
    assert len(log.read()) == 100
