"""The console script and the `dagster` CLI, end to end in subprocesses."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets_tests.gltf_validator import validate_glb

pytestmark = pytest.mark.slow


def run(args: list[str], env: dict | None = None, timeout: float = 400):
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_demo_materializes_every_sample(tmp_path: Path):
    home = tmp_path / "home"
    env = {"WAVESPEED_BASE_URL": ""}  # unset: the demo starts its own emulator
    proc = run(
        [
            shutil.which("hunyuan-assets") or "hunyuan-assets",
            "demo",
            "--home",
            str(home),
            "--latency",
            "0.3",
            "--concurrency",
            "3",
        ],
        env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    samples = sorted(p.name for p in SAMPLES_DIR.iterdir() if p.suffix in (".png", ".jpg"))
    assert f"{len(samples)} of {len(samples)} image(s) have a mesh" in proc.stdout
    store = home / "hunyuan_store"
    meshes = sorted(store.glob("meshes/*/*/*/mesh.glb"))
    assert len(meshes) == len(samples)
    for mesh in meshes:
        validate_glb(mesh)  # the Khronos validator: no errors
        assert (mesh.parent / "preview.png").stat().st_size > 1000
    log = pd.read_parquet(store / "prediction_log")
    assert sorted(log["partition_key"]) == samples
    assert set(log["status"]) == {"completed"}


def test_demo_exits_nonzero_when_an_image_fails(tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(SAMPLES_DIR / "mug.png", images / "mug.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    proc = run(
        [
            "hunyuan-assets",
            "demo",
            "--images",
            str(images),
            "--home",
            str(tmp_path / "home"),
            "--latency",
            "0.2",
        ],
        {"WAVESPEED_BASE_URL": ""},
    )
    assert proc.returncode == 1
    assert "1 of 2 image(s) have a mesh" in proc.stdout
    assert "broken.jpg" in proc.stdout


def test_dagster_cli_materializes_a_partition(emulator, tmp_path: Path):
    """`dagster asset materialize` against the project's definitions, configured by env
    (HUNYUAN_NAME blank: the default pipeline name `hunyuan3d` prefixes every name)."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(SAMPLES_DIR / "duck.png", images / "duck.png")
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        "DAGSTER_HOME": str(home),
        "WAVESPEED_BASE_URL": emulator.base_url,
        "HUNYUAN_IMAGES": str(images),
        "HUNYUAN_STORE": str(tmp_path / "store"),
        "HUNYUAN_NAME": "",
    }
    code = (
        "import dagster as dg; i = dg.DagsterInstance.get(); "
        "i.add_dynamic_partitions('hunyuan3d_images', ['duck.png'])"
    )
    assert run([sys.executable, "-c", code], env).returncode == 0
    proc = run(
        [
            "dagster",
            "asset",
            "materialize",
            "-m",
            "hunyuan_assets.definitions",
            "--select",
            "hunyuan3d/source_images,hunyuan3d/meshes",
            "--partition",
            "duck.png",
        ],
        env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stderr + proc.stdout
    assert len(list((tmp_path / "store").glob("meshes/*/*/*/mesh.glb"))) == 1
    assert emulator.stats()["submissions"] == 1
