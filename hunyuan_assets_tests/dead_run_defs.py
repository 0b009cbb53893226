"""A tiny job for the dead-run tests, loaded by a code server like any code location.

`wait_for_release` runs until its `release` file exists, so a test decides when a run may end
(and kills it before that). The dead-run sensor watches the job; the tests tune how often it
ticks with DEAD_RUN_SENSOR_INTERVAL.
"""

import os
import time
from pathlib import Path

import dagster as dg

from hunyuan_assets.integration.run_health import build_dead_run_sensor


@dg.op(config_schema={"release": str})
def wait_for_release(context: dg.OpExecutionContext) -> None:
    release = Path(context.op_config["release"])
    while not release.exists():
        time.sleep(0.1)  # the op's own wait for the test's signal
    context.log.info(f"released by {release}")


@dg.job
def held_job() -> None:
    wait_for_release()


defs = dg.Definitions(
    jobs=[held_job],
    sensors=[
        build_dead_run_sensor(
            "dead_runs",
            ["held_job"],
            minimum_interval_seconds=int(os.environ.get("DEAD_RUN_SENSOR_INTERVAL", "60")),
        )
    ],
)
