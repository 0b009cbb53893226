"""MeshStore: the same contract on a folder and on a real S3 endpoint (moto server on loopback)."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hunyuan_assets.core.store import (
    InvalidKeyError,
    LocalMeshStore,
    MeshStore,
    S3MeshStore,
    mesh_key,
    model_slug,
    open_mesh_store,
    preview_key,
)

SHA = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"
MODEL = "wavespeed-ai/hunyuan3d/v2.1"
BAD_KEYS = ["", "/abs/key", "a/../b", "..", "../x", "a//b", "a/./b", "a/", "a\\b", "nul\x00"]


def _race(n: int, fn: Callable[[int], bool]) -> list[bool]:
    """Run fn(i) in n threads released together; return their results in order."""
    barrier = threading.Barrier(n)
    results: list[bool | None] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = fn(i)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert all(r is not None for r in results)
    return [bool(r) for r in results]


def _local_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_put_get_exists_delete_round_trip(store: MeshStore) -> None:
    uri = store.put_bytes("a/b/c.bin", b"one")
    assert uri == store.uri_for("a/b/c.bin")
    assert store.get_bytes("a/b/c.bin") == b"one"
    assert store.exists("a/b/c.bin")
    store.put_bytes("a/b/c.bin", b"two")  # put replaces
    assert store.get_bytes("a/b/c.bin") == b"two"
    store.delete("a/b/c.bin")
    assert not store.exists("a/b/c.bin")
    assert store.get_bytes("a/b/c.bin") is None
    store.delete("a/b/c.bin")  # deleting a missing key is fine
    assert not store.exists("a/b")  # a "directory" is not a key


def test_delete_many_removes_every_key_and_skips_missing_ones(store: MeshStore) -> None:
    keys = [f"many/{i}.bin" for i in range(5)]
    for key in keys:
        store.put_bytes(key, b"x")
    store.put_bytes("kept.bin", b"y")
    store.delete_many([*keys, "many/never-written.bin"])
    assert store.list_keys() == ["kept.bin"]
    store.delete_many([])


def test_s3_delete_many_deletes_in_batches(s3_client, s3_bucket: str, monkeypatch) -> None:
    """One DeleteObjects request per batch (1,000 keys on S3; 2 here), no per-key round trip."""
    from hunyuan_assets.core import store as store_module

    monkeypatch.setattr(store_module, "S3_DELETE_BATCH", 2)
    store = S3MeshStore(s3_client, s3_bucket, "batch")
    keys = [f"log/{i}.parquet" for i in range(5)]
    for key in keys:
        store.put_bytes(key, b"x")
    calls: list[str] = []
    s3_client.meta.events.register(
        "before-call.s3.*", lambda model, **_: calls.append(model.name), unique_id="counting"
    )
    try:
        store.delete_many(keys)
    finally:
        s3_client.meta.events.unregister("before-call.s3.*", unique_id="counting")
    assert calls == ["DeleteObjects"] * 3
    assert store.list_keys() == []


def test_put_file_and_download_to(store: MeshStore, tmp_path: Path) -> None:
    src = tmp_path / "mesh.glb"
    payload = os.urandom(300_000)
    src.write_bytes(payload)
    uri = store.put_file("meshes/x/mesh.glb", src)
    assert uri.endswith("meshes/x/mesh.glb")
    dest = tmp_path / "out" / "copy.glb"
    assert store.download_to("meshes/x/mesh.glb", dest)
    assert dest.read_bytes() == payload
    assert not store.download_to("meshes/missing.glb", tmp_path / "out" / "none.glb")
    assert not (tmp_path / "out" / "none.glb").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["copy.glb"]  # no .part left


def test_move_file_publishes_and_removes_the_source(store: MeshStore, tmp_path: Path) -> None:
    src = tmp_path / "download" / "mesh.glb"
    src.parent.mkdir()
    payload = os.urandom(300_000)
    src.write_bytes(payload)
    uri = store.move_file("meshes/y/mesh.glb", src)
    assert uri == store.uri_for("meshes/y/mesh.glb")
    assert store.get_bytes("meshes/y/mesh.glb") == payload
    assert not src.exists()
    src.write_bytes(b"newer")  # replaces an existing object, as put_file does
    store.move_file("meshes/y/mesh.glb", src)
    assert store.get_bytes("meshes/y/mesh.glb") == b"newer"


def test_local_move_file_renames_on_one_filesystem(tmp_path: Path) -> None:
    """The same inode ends up in the store: the mesh is not written a second time."""
    store, src = LocalMeshStore(tmp_path / "store"), tmp_path / "mesh.glb"
    src.write_bytes(b"glb")
    inode = src.stat().st_ino
    store.move_file("m/mesh.glb", src)
    assert store.path_for("m/mesh.glb").stat().st_ino == inode
    assert _local_files(tmp_path / "store") == ["m/mesh.glb"]


def test_local_move_file_copies_across_filesystems(tmp_path: Path, monkeypatch) -> None:
    store, src = LocalMeshStore(tmp_path / "store"), tmp_path / "mesh.glb"
    src.write_bytes(b"glb")
    real_replace = os.replace

    def replace(a, b):  # what rename(2) answers for a source on another filesystem
        if Path(a) == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(a, b)

    monkeypatch.setattr("hunyuan_assets.core.store.os.replace", replace)
    store.move_file("m/mesh.glb", src)
    assert store.get_bytes("m/mesh.glb") == b"glb"
    assert not src.exists()
    assert _local_files(tmp_path / "store") == ["m/mesh.glb"]


def test_uris(tmp_path: Path, s3_client, s3_bucket: str) -> None:
    local = LocalMeshStore(tmp_path / "my store")
    assert local.uri_for("a/b.glb") == (tmp_path / "my store" / "a" / "b.glb").as_uri()
    assert local.root_uri.startswith("file:///")
    s3 = S3MeshStore(s3_client, s3_bucket, "/pre/fix/")
    assert s3.root_uri == f"s3://{s3_bucket}/pre/fix"
    assert s3.uri_for("a/b.glb") == f"s3://{s3_bucket}/pre/fix/a/b.glb"
    assert S3MeshStore(s3_client, s3_bucket).uri_for("k") == f"s3://{s3_bucket}/k"


def test_s3_prefix_is_applied(s3_client, s3_bucket: str) -> None:
    S3MeshStore(s3_client, s3_bucket, "team/meshes").put_bytes("x/y.txt", b"hi")
    listed = s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["team/meshes/x/y.txt"]


def test_list_keys_is_a_sorted_string_prefix_match(store: MeshStore) -> None:
    for key in ["log/date=2026-01-02/b", "log/date=2026-01-01/a", "log2/c", "meshes/m", "top"]:
        store.put_bytes(key, b"x")
    assert store.list_keys("log/") == ["log/date=2026-01-01/a", "log/date=2026-01-02/b"]
    assert store.list_keys("log") == ["log/date=2026-01-01/a", "log/date=2026-01-02/b", "log2/c"]
    assert store.list_keys("log/date=2026-01-02") == ["log/date=2026-01-02/b"]
    assert store.list_keys("nothing/") == []
    assert store.list_keys() == sorted(store.list_keys())
    assert len(store.list_keys("")) == 5


def test_local_writes_leave_no_temp_files(tmp_path: Path) -> None:
    store = LocalMeshStore(tmp_path)
    src = tmp_path.parent / f"{tmp_path.name}-src.bin"
    src.write_bytes(b"file")
    store.put_bytes("d/a.bin", b"a")
    store.put_file("d/b.bin", src)
    assert store.create_exclusive("d/c.bin", b"c")
    assert not store.create_exclusive("d/c.bin", b"other")
    with pytest.raises(FileNotFoundError):
        store.put_file("d/missing.bin", tmp_path / "does-not-exist")
    assert _local_files(tmp_path) == ["d/a.bin", "d/b.bin", "d/c.bin"]


def test_local_temp_files_are_hidden_from_listing(tmp_path: Path) -> None:
    """A crashed writer's temp file is dot-prefixed (pyarrow skips it) and never listed."""
    store = LocalMeshStore(tmp_path)
    store.put_bytes("d/a.bin", b"a")
    (tmp_path / "d" / f".a.bin.{'0' * 32}.tmp").write_bytes(b"half")
    assert store.list_keys("d/") == ["d/a.bin"]
    with pytest.raises(InvalidKeyError):
        store.put_bytes(f"d/.a.bin.{'0' * 32}.tmp", b"x")


def test_local_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    store = LocalMeshStore(tmp_path)
    versions = [bytes([i]) * 2_000_000 for i in range(1, 6)]
    store.put_bytes("big.bin", versions[0])
    done = threading.Event()
    seen: set[bytes] = set()
    bad: list[int] = []

    def reader() -> None:
        while not done.is_set():
            data = store.get_bytes("big.bin")
            if data not in versions:
                bad.append(len(data or b""))
            else:
                seen.add(data[:1])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(4):
            for version in versions:
                store.put_bytes("big.bin", version)
    finally:
        done.set()
        thread.join(timeout=30)
    assert bad == []
    assert seen  # the reader really ran


def test_create_exclusive_first_writer_wins(store: MeshStore) -> None:
    assert store.create_exclusive("claims/x.json", b'{"owner": 1}')
    assert not store.create_exclusive("claims/x.json", b'{"owner": 2}')
    assert store.get_bytes("claims/x.json") == b'{"owner": 1}'
    store.put_bytes("claims/y.json", b"existing")
    assert not store.create_exclusive("claims/y.json", b"new")
    assert store.get_bytes("claims/y.json") == b"existing"


def test_create_exclusive_race_has_exactly_one_winner(store: MeshStore) -> None:
    for round_ in range(5):
        key = f"claims/race-{round_}.bin"
        payloads = [bytes([i]) * 50_000 for i in range(8)]
        wins = _race(8, lambda i, k=key, p=payloads: store.create_exclusive(k, p[i]))
        assert wins.count(True) == 1, wins
        # The stored object is the winner's complete payload.
        assert store.get_bytes(key) == payloads[wins.index(True)]
    if isinstance(store, LocalMeshStore):
        assert all(not p.name.startswith(".") for p in store.root.rglob("*"))


def test_local_create_exclusive_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported here")

    monkeypatch.setattr(os, "link", no_links)
    store = LocalMeshStore(tmp_path)
    assert store.create_exclusive("k.bin", b"first")
    assert not store.create_exclusive("k.bin", b"second")
    assert store.get_bytes("k.bin") == b"first"
    assert _local_files(tmp_path) == ["k.bin"]


def test_s3_create_exclusive_retries_a_409_conflict(s3_client, s3_bucket: str) -> None:
    """AWS answers 409 ConditionalRequestConflict while a competing conditional PUT is in
    flight; moto cannot produce that race, so the first answer is replaced via botocore's
    event hook and the retry goes to the real moto endpoint."""
    from botocore.awsrequest import AWSResponse

    class _Raw:
        def stream(self, **_kwargs):
            yield b""

    calls: list[str] = []

    def conflict_once(request, **_kwargs):
        if request.method == "PUT" and not calls:
            calls.append("409")
            body = (
                b"<Error><Code>ConditionalRequestConflict</Code>"
                b"<Message>A conflicting operation is in progress</Message></Error>"
            )
            response = AWSResponse(request.url, 409, {}, _Raw())
            response._content = body
            return response
        return None

    s3_client.meta.events.register_first("before-send.s3.PutObject", conflict_once)
    try:
        store = S3MeshStore(s3_client, s3_bucket)
        assert store.create_exclusive("k", b"v")
    finally:
        s3_client.meta.events.unregister("before-send.s3.PutObject", conflict_once)
    assert calls == ["409"]
    assert store.get_bytes("k") == b"v"


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected(store: MeshStore, key: str) -> None:
    for op in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.create_exclusive(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.uri_for(key),
    ):
        with pytest.raises(InvalidKeyError):
            op()


@pytest.mark.parametrize("prefix", ["/abs", "a/../b", "..", "a//"])
def test_bad_prefixes_are_rejected(store: MeshStore, prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.list_keys(prefix)
    with pytest.raises(InvalidKeyError):
        store.arrow_location(prefix)


def test_local_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    store = LocalMeshStore(tmp_path / "root")
    with pytest.raises(InvalidKeyError):
        store.put_bytes("../escaped", b"x")
    assert not (tmp_path / "escaped").exists()


def test_arrow_location_reads_what_the_store_writes(store: MeshStore) -> None:
    table = pa.table({"n": pa.array([1, 2, 3], pa.int64()), "s": ["a", "b", "c"]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    store.put_bytes("tables/t1/part-1.parquet", sink.getvalue().to_pybytes())
    store.put_bytes("tables/t1/part-2.parquet", sink.getvalue().to_pybytes())
    store.put_bytes("tables/t2/other.parquet", sink.getvalue().to_pybytes())
    fs, path = store.arrow_location("tables/t1")
    read = pq.read_table(path, filesystem=fs)
    assert read.num_rows == 6
    assert sorted(read["n"].to_pylist()) == [1, 1, 2, 2, 3, 3]


def test_pyarrow_writes_through_a_local_arrow_location(tmp_path: Path) -> None:
    # Not on S3 here: moto 5.2.1 answers CompleteMultipartUpload with the wrong root element
    # (getmoto/moto#10055), which pyarrow's S3 writer rejects. Real S3 is fine.
    store = LocalMeshStore(tmp_path)
    fs, path = store.arrow_location("tables")
    fs.create_dir(path, recursive=True)
    pq.write_table(pa.table({"n": [1]}), f"{path}/by-arrow.parquet", filesystem=fs)
    assert store.list_keys("tables/") == ["tables/by-arrow.parquet"]


def test_s3_directory_markers_are_not_keys(s3_client, s3_bucket: str) -> None:
    """Consoles and pyarrow's create_dir leave empty 'dir/' objects; they are not keys."""
    s3_client.put_object(Bucket=s3_bucket, Key="p/d/", Body=b"")
    store = S3MeshStore(s3_client, s3_bucket, "p")
    store.put_bytes("d/k", b"v")
    assert store.list_keys() == ["d/k"]


def test_s3_arrow_location_mirrors_the_boto3_client(
    s3_client, s3_bucket: str, moto_endpoint: str
) -> None:
    import pyarrow.fs as pafs

    fs, path = S3MeshStore(s3_client, s3_bucket, "pre").arrow_location("log/")
    assert isinstance(fs, pafs.S3FileSystem)
    assert path == f"{s3_bucket}/pre/log"
    assert fs.region == "us-east-1"
    # A store rooted at the bucket and an empty prefix point at the bucket itself.
    assert S3MeshStore(s3_client, s3_bucket).arrow_location()[1] == s3_bucket


def test_open_mesh_store(tmp_path: Path, s3_client, s3_bucket: str, moto_endpoint: str) -> None:
    local = open_mesh_store(str(tmp_path / "m"))
    assert isinstance(local, LocalMeshStore) and local.root == tmp_path / "m"
    from_uri = open_mesh_store((tmp_path / "with space").as_uri())
    assert isinstance(from_uri, LocalMeshStore) and from_uri.root == tmp_path / "with space"
    s3 = open_mesh_store(f"s3://{s3_bucket}/a/b", s3_client=s3_client)
    assert isinstance(s3, S3MeshStore) and (s3.bucket, s3.prefix) == (s3_bucket, "a/b")
    s3.put_bytes("k", b"v")
    # Without a client, one is built for the endpoint (credentials from the environment).
    built = open_mesh_store(f"s3://{s3_bucket}/a/b", endpoint_url=moto_endpoint)
    assert built.get_bytes("k") == b"v"
    for bad in ("s3://", "gs://bucket/x", "file://otherhost/x"):
        with pytest.raises(ValueError):
            open_mesh_store(bad)


def test_mesh_layout_is_content_addressed() -> None:
    slug = model_slug(MODEL)
    assert mesh_key(SHA, MODEL) == f"meshes/ab/{SHA}/{slug}/mesh.glb"
    assert preview_key(SHA, MODEL) == f"meshes/ab/{SHA}/{slug}/preview.png"
    assert mesh_key(SHA, MODEL, quarantined=True) == f"quarantine/meshes/ab/{SHA}/{slug}/mesh.glb"
    assert preview_key(SHA.upper(), MODEL, quarantined=True).startswith("quarantine/meshes/ab/")
    with pytest.raises(ValueError):
        mesh_key("not-a-sha", MODEL)
    with pytest.raises(ValueError):
        mesh_key(SHA, "")


def test_model_slug_is_safe_readable_stable_and_distinct() -> None:
    slug = model_slug(MODEL)
    assert slug.startswith("wavespeed-ai-hunyuan3d-v2.1-")
    assert slug == model_slug(MODEL)
    assert "/" not in slug and not slug.startswith(".")
    # Ids that read alike still get their own directories.
    similar = ["a/b", "a-b", "A/B", "a//b", "a b", "../..", "a/b/"]
    slugs = [model_slug(m) for m in similar]
    assert len(set(slugs)) == len(similar)
    for s in slugs:
        LocalMeshStore("/tmp").uri_for(f"x/{s}/y")  # every slug is a valid key segment


def test_s3_store_works_with_a_prefixless_bucket_listing(s3_client, s3_bucket: str) -> None:
    store = S3MeshStore(s3_client, s3_bucket)
    for i in range(3):
        store.put_bytes(f"k/{i}", b"x")
    assert store.list_keys() == ["k/0", "k/1", "k/2"]


def test_s3_errors_other_than_missing_keys_are_raised(s3_client, moto_endpoint: str) -> None:
    store = S3MeshStore(s3_client, "no-such-bucket-here")
    with pytest.raises(Exception) as info:
        store.get_bytes("k")
    assert "NoSuchBucket" in str(info.value)


def test_the_boto3_client_can_be_any_compatible_client(
    s3_bucket: str, moto_endpoint: str, s3_env: None
) -> None:
    """What dagster-aws's S3Resource.get_client() returns: a plain boto3 S3 client."""
    client = boto3.session.Session().client("s3", endpoint_url=moto_endpoint)
    store = S3MeshStore(client, s3_bucket)
    store.put_bytes("k", b"v")
    fs, path = store.arrow_location()
    assert fs.get_file_info(f"{path}/k").size == 1
