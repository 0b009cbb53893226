"""The console script and the `dagster` CLI, end to end in subprocesses."""

import gc
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hunyuan_assets.core.sources import SAMPLES_DIR
from hunyuan_assets_tests.gltf_validator import validate_glb

pytestmark = pytest.mark.slow

# The console scripts of the interpreter running the tests (a fresh venv on CI), whether or
# not its bin folder is on PATH.
BIN = Path(sys.executable).parent
# What a user should never have to read in the demo's output: a Python traceback, Dagster's
# stack trace, a Python warning (`file:line: SomeWarning: ...`), a logged warning or error.
NOISE = re.compile(
    r"Traceback \(most recent call last\)|Stack Trace:|\w+Warning: |\b(WARNING|ERROR)\b"
)


def run(args: list[str], env: dict | None = None, timeout: float = 400):
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def demo(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run([str(BIN / "hunyuan-assets"), "demo", "--home", str(home), *args], env)


def assert_only_what_a_user_needs(proc: subprocess.CompletedProcess) -> None:
    """Nothing on stderr, and no traceback or warning among the demo's lines."""
    noise = [line for line in proc.stdout.splitlines() if NOISE.search(line)]
    assert proc.stderr == "" and noise == [], proc.stderr[-3000:] + "\n".join(noise)


@pytest.fixture(scope="module")
def sample_demo(tmp_path_factory: pytest.TempPathFactory):
    """`hunyuan-assets demo` over the bundled samples, on the emulator it starts itself."""
    home = tmp_path_factory.mktemp("demo") / "home"
    env = {"WAVESPEED_BASE_URL": ""}  # unset: the demo starts its own emulator
    return home, demo(home, "--latency", "0.3", "--concurrency", "3", env=env)


def test_demo_materializes_every_sample(sample_demo):
    home, proc = sample_demo
    assert proc.returncode == 0, proc.stdout + proc.stderr
    samples = sorted(p.name for p in SAMPLES_DIR.iterdir())
    assert f"{len(samples)} of {len(samples)} image(s) have a mesh" in proc.stdout
    assert "skipped:" not in proc.stdout  # the bundled folder holds only the pictures
    store = home / "hunyuan_store"
    meshes = sorted(store.glob("meshes/*/*/*/mesh.glb"))
    assert len(meshes) == len(samples)
    for mesh in meshes:
        validate_glb(mesh)  # the Khronos validator: no errors
        assert (mesh.parent / "preview.png").stat().st_size > 1000
    log = pd.read_parquet(store / "prediction_log")
    assert sorted(log["partition_key"]) == samples
    assert set(log["status"]) == {"completed"}


def test_demo_prints_no_traceback_or_warning(sample_demo):
    """Run from the installed console script, so a dependency missing from pyproject.toml (like
    scipy, whose absence made trimesh log tracebacks) or an unfiltered Dagster notice fails."""
    _home, proc = sample_demo
    assert proc.returncode == 0
    assert_only_what_a_user_needs(proc)


def test_the_summary_reads_in_chunks_and_prints_the_same(sample_demo, monkeypatch, capsys):
    """The summary reads the materializations a chunk of images at a time (their metadata
    holds the thumbnails); chunks of 4 over the 6 samples print what the demo printed."""
    import dagster as dg

    from hunyuan_assets import cli
    from hunyuan_assets.core.log import PredictionLog
    from hunyuan_assets.core.store import open_mesh_store

    home, proc = sample_demo
    printed = proc.stdout[proc.stdout.index("\nimage ") :]
    keys = [line.split()[0] for line in printed.splitlines()[2:] if line.strip()][:6]
    assert len(keys) == 6 and all("." in key for key in keys)
    store = str(home / "hunyuan_store")
    meshes = dg.AssetKey([cli.DEMO_PIPELINE, "meshes"])
    monkeypatch.setattr(cli, "SUMMARY_CHUNK", 4)
    read_at_once: list[int] = []
    real = cli.latest_materializations

    def counting(instance, asset_key, partition_keys):
        read_at_once.append(len(partition_keys))
        return real(instance, asset_key, partition_keys)

    monkeypatch.setattr(cli, "latest_materializations", counting)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        log = PredictionLog(open_mesh_store(store))
        assert cli._print_summary(instance, meshes, keys, store, log) == 0
    assert capsys.readouterr().out == printed
    assert read_at_once == [4, 2]


def test_the_console_script_leaves_the_final_collection_to_the_os(monkeypatch):
    """`hunyuan-assets` runs `console_main`, which freezes the heap once `main` is done: the
    collection CPython makes at exit would otherwise walk every object the run left."""
    from importlib.metadata import entry_points

    from hunyuan_assets import cli

    [script] = entry_points(group="console_scripts", name="hunyuan-assets")
    assert script.value == "hunyuan_assets.cli:console_main"
    monkeypatch.setattr(cli, "main", lambda: 3)
    assert gc.get_freeze_count() == 0
    try:
        assert cli.console_main() == 3
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_importing_the_definitions_prints_nothing():
    """Even with every warning shown: the notices of the preview/beta Dagster features we rely
    on are filtered where the Dagster layer starts (hunyuan_assets/integration/__init__.py)."""
    proc = run([sys.executable, "-W", "default", "-c", "import hunyuan_assets.definitions"])
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stderr[-3000:]


def test_a_failed_image_says_why_on_its_summary_line(emulator, api_key: str, tmp_path: Path):
    """One image that does not decode (never submitted), one whose prediction fails at the
    API: each line names its own reason, the demo exits 1, and nothing else is printed."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(SAMPLES_DIR / "mug.png", images / "mug.png")
    shutil.copy(SAMPLES_DIR / "duck.png", images / "doomed.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    emulator.configure(fail_tasks={"match": "doomed", "error": "model crashed on this input"})
    env = {"WAVESPEED_BASE_URL": emulator.base_url, "WAVESPEED_API_KEY": api_key}
    proc = demo(tmp_path / "home", "--images", str(images), env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 of 3 image(s) have a mesh" in proc.stdout
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "FAILED" in lines["broken.jpg"] and "corrupt or truncated JPEG" in lines["broken.jpg"]
    assert "FAILED" in lines["doomed.png"] and "model crashed on this input" in lines["doomed.png"]
    assert "completed" in lines["mug.png"]
    assert_only_what_a_user_needs(proc)
    assert api_key not in proc.stdout


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
            str(BIN / "dagster"),
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


def test_a_run_that_fails_before_any_prediction_says_why_on_each_line(tmp_path: Path):
    """A store the run cannot write (its folder is a file): no prediction, so nothing in the
    log; each image's line names the error the run failed with, not just "no error logged",
    and the step fails at once instead of being retried on an error no retry can fix."""
    (tmp_path / "a-file").write_text("not a folder")
    store = tmp_path / "a-file" / "store"
    env = {"WAVESPEED_BASE_URL": ""}
    proc = demo(tmp_path / "home", "--latency", "0.1", "--store", str(store), env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = [line for line in proc.stdout.splitlines() if " FAILED " in line]
    assert len(failed) == len(list(SAMPLES_DIR.iterdir())), proc.stdout
    assert all("the run failed: NotADirectoryError" in line for line in failed), failed
    assert_only_what_a_user_needs(proc)
    # Failed at once: no waiting out the step's RetryPolicy (~2 minutes) on a path error.
    import dagster as dg

    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        [meshes_run, *_] = instance.get_run_records()[::-1]
        kinds = {
            e.dagster_event.event_type_value
            for e in instance.all_logs(meshes_run.dagster_run.run_id)
            if e.is_dagster_event
        }
    assert "STEP_FAILURE" in kinds and "STEP_UP_FOR_RETRY" not in kinds
