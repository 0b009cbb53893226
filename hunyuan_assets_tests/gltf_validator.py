"""Run the Khronos glTF validator on a file from a test.

The validator is the npm package `gltf-validator`, installed beside the repository (CI runs
the same command). A missing Node.js or package fails the test rather than skipping it: a
silently skipped validator is how invalid meshes reach users.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = REPO_ROOT / ".ci" / "node" / "node_modules"
SCRIPT = Path(__file__).with_name("gltf_validate.mjs")
VALIDATOR_PACKAGE = "gltf-validator@2.0.0-dev.3.10"
INSTALL_COMMAND = f"npm install --prefix {REPO_ROOT / '.ci' / 'node'} {VALIDATOR_PACKAGE}"
SEVERITIES = ("error", "warning", "info", "hint")


def _install_validator() -> None:
    """First use on a fresh clone: fetch the validator from the npm registry (no Dagster, no
    network beyond the registry). Failing to install fails the test, it never skips it."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"npm is not on PATH; install Node.js and npm, then run: {INSTALL_COMMAND}")
    proc = subprocess.run(
        [npm, "install", "--silent", "--prefix", str(NODE_MODULES.parent), VALIDATOR_PACKAGE],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 or not (NODE_MODULES / "gltf-validator").is_dir():
        pytest.fail(f"could not install the glTF validator ({INSTALL_COMMAND}): {proc.stderr}")


def validate_glb(path: Path | str) -> dict[str, Any]:
    """The validator's report for a .glb/.gltf file; AssertionError listing the errors if any."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"Node.js is not on PATH; install it, then run: {INSTALL_COMMAND}")
    if not (NODE_MODULES / "gltf-validator").is_dir():
        _install_validator()
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    proc = subprocess.run(
        [node, str(SCRIPT), str(path)], env=env, capture_output=True, text=True, timeout=120
    )
    if proc.returncode not in (0, 1):
        pytest.fail(f"the glTF validator could not run (exit {proc.returncode}): {proc.stderr}")
    report: dict[str, Any] = json.loads(proc.stdout)
    issues = report["issues"]
    if issues["numErrors"] > 0:
        lines = [
            f"  {SEVERITIES[m['severity']]} {m['code']} at {m.get('pointer', '-')}: {m['message']}"
            for m in issues["messages"]
            if m["severity"] == 0
        ]
        raise AssertionError(
            f"glTF validator: {issues['numErrors']} error(s) in {path}:\n" + "\n".join(lines)
        )
    return report
