"""Shared fixtures: the WaveSpeed emulator and a real S3 server (moto) on loopback."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

API_KEY = "ws-test-key-0123456789abcdef"


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture
def instance():
    """A real (temporary, SQLite) Dagster instance."""
    import dagster as dg

    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    """A folder with three sample images: mug.png, duck.png, vase.jpg."""
    from hunyuan_assets.core.sources import SAMPLES_DIR

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("mug.png", "duck.png", "vase.jpg"):
        shutil.copy(SAMPLES_DIR / name, folder / name)
    return folder


@pytest.fixture
def emulator() -> Iterator:
    """A fresh in-process emulator on a free loopback port, fast latency."""
    from hunyuan_assets.emulator import EmulatorServer

    with EmulatorServer(latency=0.2) as server:
        yield server


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode: a real S3 endpoint over HTTP on loopback."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3_client(moto_endpoint: str, s3_env: None):
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def s3_bucket(s3_client) -> str:
    """A new empty bucket for each test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """A mesh store, once as a folder and once under a prefix of a moto S3 bucket."""
    from hunyuan_assets.core.store import LocalMeshStore, S3MeshStore

    if request.param == "local":
        return LocalMeshStore(tmp_path / "store")
    client = request.getfixturevalue("s3_client")
    bucket = request.getfixturevalue("s3_bucket")
    return S3MeshStore(client, bucket, "team/meshes")


@pytest.fixture
def tick_log(capfd) -> Callable[[], str]:
    """What sensors and schedules wrote to their tick log so far. Outside the daemon Dagster's
    instigation logger only has its console handler, so read the console."""
    seen: list[str] = []

    def read() -> str:
        out, err = capfd.readouterr()
        seen.append(out + err)
        return "".join(seen)

    return read


DEFAULT_FAULT_IMAGES = 12


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fault-images",
        type=int,
        default=None,
        help="images per case of test_faults.py (default $HUNYUAN_FAULT_IMAGES or "
        f"{DEFAULT_FAULT_IMAGES}; the issue's full size is 100)",
    )


@pytest.fixture(scope="session")
def fault_images(request: pytest.FixtureRequest) -> int:
    """How many pictures each fault-injection case runs over."""
    import os

    chosen = request.config.getoption("--fault-images")
    if chosen is None:
        chosen = int(os.environ.get("HUNYUAN_FAULT_IMAGES", DEFAULT_FAULT_IMAGES))
    if chosen < 10:  # every 6th picture from the 4th on is doomed in some cases: 2 at least
        raise pytest.UsageError(f"--fault-images must be at least 10, got {chosen}")
    return chosen
