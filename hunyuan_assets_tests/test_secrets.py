"""The API key stays secret end to end, and the client trusts only http(s) URLs.

The whole demo runs in a subprocess with a recognisable key, some images failing, retries and
a lost submit answer, every Python log line of the client and HTTP stack routed into Dagster's
event log; then stdout, stderr, every file of the demo's Dagster home, every event record, run
tags and metadata, every parquet row and every object in the store are searched for the key,
raw, URL-encoded and base64-encoded (at each of the three byte alignments). Beside it: image
URLs other than http(s) are refused before any request, a stalled download times out, the
presigned URLs the pipeline submits last an hour at most, and an expired registered URL is
renewed only for the bytes that were validated.

Proven elsewhere, not repeated here:
- the key in client errors, reprs, tracebacks' locals and logs, and only sent to the API's own
  origin: test_client.py::test_the_key_never_reaches_logs_or_errors,
  test_the_key_goes_only_to_the_api_origin, test_parse_envelope_scrubs_the_key_from_api_text;
  in-process materialization: test_assets.py::test_api_key_never_leaks;
- outputs fetched over http(s) only, redirects to file:/ftp: not followed:
  test_client.py::test_outputs_are_fetched_only_over_http_s;
- the download size cap (Content-Length, and while streaming): test_client.py::
  test_max_bytes_refuses_and_leaves_no_file, test_max_bytes_is_enforced_while_streaming,
  test_async_download_limit_leaves_no_file;
- presigned URLs from registration last an hour: test_registration.py::
  test_s3_urls_are_presigned_for_an_hour_and_say_when_they_expire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from hunyuan_assets.client import (
    AsyncHunyuan3DClient,
    ClientSettings,
    HttpRetryPolicy,
    Hunyuan3DClient,
    InvalidInputError,
    OutputDownloadError,
    Timeouts,
)
from hunyuan_assets.core.log import PredictionLog
from hunyuan_assets.core.registration import DEFAULT_PRESIGN_EXPIRY
from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets.core.store import LocalMeshStore, MeshStore, S3MeshStore
from hunyuan_assets.integration.backfill import materialize_images
from hunyuan_assets.integration.compat import single_process_instance_yaml
from hunyuan_assets.integration.factory import build_mesh_pipeline
from hunyuan_assets_tests.api_proxy import ApiProxy
from hunyuan_assets_tests.helpers import (
    FAST_POLL,
    MESHES,
    NAME,
    SOURCE_IMAGES,
    mesh_store_of,
    partition_keys,
    pipeline_for,
    with_hunyuan3d,
)

BIN = Path(sys.executable).parent
# Recognisable, and with characters that URL-encoding changes ('+', '=', ':').
SECRET = "ws-live-CANARY+trust=7f3a9c:42"
AWS_SECRET = "aws-CANARY+secret=5e1d8b:17"


def encodings(secret: str) -> dict[str, bytes]:
    """The forms a leaked secret could take: raw, URL-encoded, and base64 (standard and
    URL-safe) at each byte alignment, so that it shows inside a longer encoded string too."""
    raw = secret.encode()
    forms = {
        "raw": raw,
        "url-encoded": urllib.parse.quote(secret, safe="").encode(),
        "form-encoded": urllib.parse.quote_plus(secret).encode(),
    }
    for offset in range(3):
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            text = encode(b"\0" * offset + raw)
            whole = (offset + len(raw)) // 3  # 3-byte groups; the first one holds the padding
            forms[f"{name}@{offset}"] = text[4 if offset else 0 : 4 * whole]
    return forms


def test_encodings_find_the_secret_inside_longer_text() -> None:
    """The scanner itself can fail: each form is found where a leak would put it."""
    forms = encodings(SECRET)
    for prefix in (b"", b"u", b"us"):
        blob = base64.b64encode(prefix + b"Bearer " + SECRET.encode() + b" tail")
        assert leaks(blob, forms), prefix
    assert leaks(json.dumps({"q": urllib.parse.urlencode({"key": SECRET})}).encode(), forms)
    assert not leaks(b"ws-live-CANARY trust", forms)


def leaks(blob: bytes | str, forms: dict[str, bytes]) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    return [name for name, needle in forms.items() if needle in data]


@pytest.fixture
def proxy(emulator) -> Iterator[ApiProxy]:
    """Sees the Authorization headers and submitted image URLs on the wire."""
    server = ApiProxy(emulator.base_url)
    yield server
    server.close()


# -- the whole demo --------------------------------------------------------------------------
def demo_home(tmp_path: Path) -> Path:
    """A demo home whose instance routes the client's and the HTTP stack's Python logs, at
    DEBUG, into the event log (and so onto the console and into the home)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        single_process_instance_yaml(str(home))
        + "python_logs:\n"
        + "  python_log_level: DEBUG\n"
        + "  managed_python_loggers: [hunyuan_assets, httpx, httpcore]\n"
    )
    return home


def failing_images(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(SAMPLES_DIR / "mug.png", images / "mug.png")
    shutil.copy(SAMPLES_DIR / "vase.jpg", images / "vase.jpg")
    shutil.copy(SAMPLES_DIR / "duck.png", images / "doomed.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return images


def store_objects(store: MeshStore) -> dict[str, bytes]:
    return {key: store.get_bytes(key) or b"" for key in store.list_keys()}


def instance_texts(home: Path) -> Iterator[tuple[str, str]]:
    """Every run (tags, config) and every event record of the demo's instance, as text."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) >= 2  # the meshes run and the prediction log's
        for run in runs:
            yield f"run {run.run_id}", repr(run) + json.dumps(run.tags)
            for record in instance.get_records_for_run(run.run_id).records:
                entry = record.event_log_entry
                yield f"event {record.storage_id}", repr(entry) + dg.serialize_value(entry)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["folder", "s3"])
def test_the_demo_never_shows_the_key_anywhere(
    emulator, proxy: ApiProxy, tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    images, home = failing_images(tmp_path), demo_home(tmp_path)
    emulator.configure(
        fail_tasks={"match": "doomed", "error": "model crashed on this input"},
        rules=[
            {"endpoint": "upload", "kind": "502", "count": 1},
            {"endpoint": "submit", "kind": "drop_after_accept", "count": 1},  # reconciled
            {"endpoint": "result", "kind": "429", "count": 1, "retry_after": 0.05},
            {"endpoint": "output", "kind": "503", "count": 1, "retry_after": 0.05},
        ],
    )
    env = {
        **os.environ,
        "WAVESPEED_BASE_URL": proxy.base_url,
        "WAVESPEED_API_KEY": SECRET,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    store: MeshStore
    args = ["--images", str(images), "--log-level", "DEBUG", "--latency", "0.2"]
    if where == "s3":
        s3_client, bucket = (
            request.getfixturevalue("s3_client"),
            request.getfixturevalue("s3_bucket"),
        )
        env["HUNYUAN_S3_ENDPOINT_URL"] = request.getfixturevalue("moto_endpoint")
        args += ["--store", f"s3://{bucket}/demo"]
        store = S3MeshStore(s3_client, bucket, "demo")
    else:
        store = LocalMeshStore(home / "hunyuan_store")
    proc = subprocess.run(
        [str(BIN / "hunyuan-assets"), "demo", "--home", str(home), *args],
        capture_output=True,
        env=env,
        timeout=400,
    )
    out, err = proc.stdout.decode(), proc.stderr.decode()

    # The key was in use, and the error paths ran.
    assert f"Bearer {SECRET}" in proxy.authorizations
    assert proc.returncode == 1, out + err[-3000:]
    assert "2 of 4 image(s) have a mesh" in out, out
    assert "corrupt or truncated JPEG" in out and "model crashed on this input" in out
    assert emulator.stats()["faults_injected"] == 4
    assert "retrying" in err and "reconciled" in err  # client and generator logs were routed

    forms = {**encodings(SECRET), **{f"aws {k}": v for k, v in encodings(AWS_SECRET).items()}}
    found: dict[str, list[str]] = {}
    for name, blob in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        found[name] = leaks(blob, forms)
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".db") for p in files) and any(
        "compute_logs" in str(p) for p in files
    )
    for path in files:  # the instance's databases, compute logs, the folder store
        found[str(path)] = leaks(path.read_bytes(), forms)
    for name, text in instance_texts(home):
        found[name] = leaks(text, forms)
    objects = store_objects(store)
    assert any(key.endswith("mesh.glb") for key in objects)
    for key, data in objects.items():
        found[store.uri_for(key)] = leaks(data, forms)
    rows = PredictionLog(store).read()
    assert len(rows) >= 4  # one row per image at least, failures included
    for row in rows.astype(str).to_dict("records"):
        found[f"log row {row['row_id']}"] = leaks(json.dumps(row), forms)
    assert {where: hits for where, hits in found.items() if hits} == {}


# -- image URLs --------------------------------------------------------------------------------
NOT_HTTP = [
    "file:///etc/passwd",
    "ftp://127.0.0.1/mug.png",
    "data:image/png;base64,iVBORw0KGgo=",
    "javascript:alert(1)",
    "mug.png",  # relative: no scheme at all
]


def settings(base_url: str, **overrides: Any) -> ClientSettings:
    retry = HttpRetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, jitter=0.0)
    return ClientSettings(api_key=SECRET, base_url=base_url, **{"retry": retry, **overrides})


@pytest.mark.parametrize("image_url", NOT_HTTP)
def test_an_image_url_that_is_not_http_s_is_refused_before_any_request(
    emulator, image_url: str
) -> None:
    with Hunyuan3DClient(settings(emulator.base_url)) as client:
        with pytest.raises(InvalidInputError, match="only http") as refused:
            client.submit(image_url)
    assert not refused.value.transient and image_url not in str(refused.value)

    async def asynchronously() -> None:
        async with AsyncHunyuan3DClient(settings(emulator.base_url)) as client:
            with pytest.raises(InvalidInputError, match="only http"):
                await client.submit(image_url)

    asyncio.run(asynchronously())
    assert emulator.stats()["requests"].get("submit", 0) == 0


# -- downloads ---------------------------------------------------------------------------------
def test_a_stalled_output_download_times_out_and_leaves_no_file(emulator, tmp_path: Path) -> None:
    """The output host answers nothing within the download timeout: the client gives up
    (retrying once, it is transient) and keeps no partial file."""
    timeouts = Timeouts(connect=2.0, download=0.2)
    with Hunyuan3DClient(settings(emulator.base_url, timeouts=timeouts)) as client:
        done = client.wait(client.submit(client.upload(SAMPLES_DIR / "mug.png")))
        emulator.configure(rules=[{"endpoint": "output", "kind": "slow", "delay": 1.0, "count": 2}])
        dest = tmp_path / "mesh.glb"
        with pytest.raises(OutputDownloadError, match="ReadTimeout") as caught:
            client.download(done.outputs[0], dest)
    assert caught.value.transient and caught.value.attempts == 2
    assert not dest.exists() and not dest.with_name("mesh.glb.part").exists()
    assert emulator.stats()["requests"]["output"] == 2


# -- presigned S3 URLs ----------------------------------------------------------------------------
def expires_in_seconds(url: str) -> int:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    if "X-Amz-Expires" in query:  # SigV4: a lifetime
        return int(query["X-Amz-Expires"][0])
    return int(query["Expires"][0]) - int(datetime.now(UTC).timestamp())  # SigV2: a deadline


def test_the_presigned_urls_the_pipeline_submits_expire_within_an_hour(
    emulator, proxy: ApiProxy, instance, s3_client, s3_bucket: str, tmp_path: Path
) -> None:
    """What goes over the wire to the API, seen by a proxy: presigned GETs of the images in S3,
    valid an hour at most (not the source's own six days), and fetchable (the meshes exist)."""
    for name in ("mug.png", "vase.jpg"):
        s3_client.put_object(
            Bucket=s3_bucket, Key=f"in/{name}", Body=(SAMPLES_DIR / name).read_bytes()
        )
    endpoint = s3_client.meta.endpoint_url
    pipeline = build_mesh_pipeline(
        NAME,
        images=f"s3://{s3_bucket}/in",
        store=str(tmp_path / "store"),
        base_url=proxy.base_url,
        s3_endpoint_url=endpoint,
    )
    pipeline = with_hunyuan3d(pipeline, **FAST_POLL)
    keys = partition_keys(pipeline)
    assert all(r.success for r in materialize_images(instance, pipeline, keys))
    assert set(instance.get_materialized_partitions(MESHES)) == set(keys)
    assert len(proxy.submitted_images) == 2
    for url in proxy.submitted_images:
        parts = urllib.parse.urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == endpoint and parts.path.startswith(
            f"/{s3_bucket}/in/"
        )
        assert 0 < expires_in_seconds(url) <= DEFAULT_PRESIGN_EXPIRY.total_seconds()


def test_an_expired_registered_url_is_renewed_and_only_for_the_same_bytes(
    emulator, instance, tmp_path: Path
) -> None:
    """`meshes` alone, after source_images registered the images and their URLs expired: each
    image is registered again before it is submitted, and one whose bytes changed since is
    refused (never sent for a mesh: source_images must be materialized again first)."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("mug.png", "duck.png"):
        shutil.copy(SAMPLES_DIR / name, images / name)
    pipeline = with_hunyuan3d(pipeline_for(emulator, images, tmp_path / "store"), **FAST_POLL)
    keys = ["mug.png", "duck.png"]
    registered = materialize_images(instance, pipeline, keys, selection=[SOURCE_IMAGES])
    assert all(r.success for r in registered)
    store = mesh_store_of(pipeline)
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for key in store.list_keys("registrations/"):
        record = json.loads(store.get_bytes(key) or b"")
        store.put_bytes(key, json.dumps({**record, "url_expires_at": an_hour_ago}).encode())
    shutil.copy(SAMPLES_DIR / "vase.jpg", images / "duck.png")  # another picture, same name
    uploads = emulator.stats()["uploads"]

    [result] = materialize_images(instance, pipeline, keys, selection=[MESHES])
    assert not result.success
    assert set(instance.get_materialized_partitions(MESHES)) == {"mug.png"}
    assert emulator.stats()["submissions"] == 1  # the mug; the changed duck was never submitted
    assert emulator.stats()["uploads"] == uploads + 2  # both registered again
    [refused] = [r for r in log_rows_of(store) if r["partition_key"] == "duck.png"]
    assert refused["status"] == "failed" and "image changed" in refused["error"]
    assert pd.isna(refused["prediction_id"])


def log_rows_of(store: MeshStore) -> list[dict]:
    return PredictionLog(store).read().to_dict("records")
