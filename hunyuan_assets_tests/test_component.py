"""MeshesComponent through the real `dg` CLI, on a project generated the way a team would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from hunyuan_assets.core.sources import SAMPLES_DIR

pytestmark = pytest.mark.slow

SECRET = "ws-component-SECRET-7777777777"


def dg_cli(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).with_name("dg")
    proc = subprocess.run(
        [str(executable if executable.exists() else shutil.which("dg")), *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "WAVESPEED_API_KEY": SECRET, "DAGSTER_HOME": str(project / ".home")},
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty dg project: pyproject with [tool.dg], a package whose definitions load defs/."""
    root = tmp_path / "teamproj"
    (root / "teamproj" / "defs").mkdir(parents=True)
    (root / ".home").mkdir()
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [project]
            name = "teamproj"
            version = "0.1.0"
            requires-python = ">=3.11"

            [tool.dg]
            directory_type = "project"

            [tool.dg.project]
            root_module = "teamproj"
            """
        )
    )
    (root / "teamproj" / "__init__.py").write_text("")
    (root / "teamproj" / "definitions.py").write_text(
        textwrap.dedent(
            """\
            from pathlib import Path

            import dagster as dg


            @dg.definitions
            def defs() -> dg.Definitions:
                return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
            """
        )
    )
    return root


def load_project_defs(project: Path) -> dg.Definitions:
    sys.path.insert(0, str(project))
    try:
        return dg.load_from_defs_folder(project_root=project)
    finally:
        sys.path.remove(str(project))
        for name in [m for m in sys.modules if m == "teamproj" or m.startswith("teamproj.")]:
            del sys.modules[name]


def test_dg_lists_scaffolds_and_validates_two_pipelines(project: Path):
    listed = json.loads(dg_cli(project, "list", "components", "--json").stdout)
    assert "hunyuan_assets.MeshesComponent" in {item["key"] for item in listed["items"]}

    for name in ("products", "concepts"):
        dg_cli(project, "scaffold", "defs", "hunyuan_assets.MeshesComponent", name)
        assert (project / "teamproj" / "defs" / name / "defs.yaml").is_file()
        assert (project / "data" / name / "images").is_dir()
    dg_cli(project, "check", "defs")

    defs = json.loads(dg_cli(project, "list", "defs", "--json").stdout)
    assets = {asset["asset_key"] for asset in defs["assets"]}
    assert {"products/meshes", "concepts/meshes", "concepts/prediction_log"} <= assets
    jobs = {job["name"] for job in defs["jobs"]}
    assert {"products_meshes_job", "concepts_meshes_job"} <= jobs
    sensors = {sensor["name"] for sensor in defs["sensors"]}
    assert sensors == {
        f"{name}_{sensor}"
        for name in ("products", "concepts")
        for sensor in ("image_sensor", "dead_run_sensor")
    }
    checks = {check["key"] for check in defs["asset_checks"]}
    assert {"products/meshes:glb_valid", "concepts/meshes:glb_valid"} <= checks
    resources = {resource["name"] for resource in defs["resources"]}
    assert {"products_hunyuan3d", "concepts_mesh_store"} <= resources
    assert SECRET not in json.dumps(defs), "the key is a reference to the variable, not its value"

    yaml = project / "teamproj" / "defs" / "concepts" / "defs.yaml"
    yaml.write_text(yaml.read_text().replace("max_concurrency: 2", "max_concurrency: lots"))
    broken = dg_cli(project, "check", "defs", check=False)
    assert broken.returncode != 0
    assert "max_concurrency" in broken.stdout + broken.stderr
    assert "valid integer" in broken.stdout + broken.stderr


def test_component_pipelines_materialize_side_by_side(
    project: Path, emulator, instance, monkeypatch
):
    monkeypatch.setenv("WAVESPEED_API_KEY", SECRET)
    for name, picture in (("products", "mug.png"), ("concepts", "duck.png")):
        folder = project / "teamproj" / "defs" / name
        folder.mkdir(parents=True)
        (folder / "defs.yaml").write_text(
            textwrap.dedent(
                f"""\
                type: hunyuan_assets.MeshesComponent
                attributes:
                  name: {name}
                  images: data/{name}
                  store: data/store
                  base_url: {emulator.base_url}
                  api_key: "{{{{ env.WAVESPEED_API_KEY }}}}"
                  automation: false
                """
            )
        )
        (project / "data" / name).mkdir(parents=True)
        shutil.copy(SAMPLES_DIR / picture, project / "data" / name / picture)
    defs = load_project_defs(project)
    keys = defs.resolve_all_asset_keys()
    assert {dg.AssetKey(["products", "meshes"]), dg.AssetKey(["concepts", "meshes"])} <= set(keys)

    resources = defs.resources or {}
    api_key = resources["products_hunyuan3d"].api_key
    assert isinstance(api_key, dg.EnvVar) and api_key.env_var_name == "WAVESPEED_API_KEY"
    assert str(resources["products_images"].location) == str(project / "data" / "products")

    for name, picture in (("products", "mug.png"), ("concepts", "duck.png")):
        instance.add_dynamic_partitions(f"{name}_images", [picture])
        result = dg.materialize(
            [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)],
            selection=[dg.AssetKey([name, "source_images"]), dg.AssetKey([name, "meshes"])],
            partition_key=picture,
            instance=instance,
            resources=resources,
        )
        assert result.success
    assert instance.get_materialized_partitions(dg.AssetKey(["products", "meshes"])) == {"mug.png"}
    assert instance.get_materialized_partitions(dg.AssetKey(["concepts", "meshes"])) == {"duck.png"}
    assert emulator.stats()["submissions"] == 2
