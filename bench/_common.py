"""Helpers shared by the benchmarks: test images, a throw-away Dagster home, markdown tables.

Not a benchmark itself (the leading underscore keeps `run_all.py` from running it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

# The benchmarks run as plain scripts (`python bench/x.py`); make the package importable from
# a checkout that was not installed.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hunyuan_assets.core.sources import SAMPLES_DIR  # noqa: E402

# Run config that keeps Dagster's console logger to warnings: the event log (SQLite) still
# records every event, only the terminal stays readable. Same for every compared mode.
QUIET_RUN_CONFIG: dict = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def quiet() -> None:
    """Silence Beta/Preview/Supersession warnings and chatty loggers (benchmarks print tables)."""
    warnings.filterwarnings("ignore")
    for name in ("dagster", "hunyuan_assets", "httpx", "botocore", "urllib3", "werkzeug"):
        logging.getLogger(name).setLevel(logging.ERROR)


def sample_images() -> list[Path]:
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in (".png", ".jpg"))


def make_images(folder: Path, count: int, salt: bytes = b"") -> list[Path]:
    """`count` distinct pictures: the bundled samples, cycled, each with bytes appended.

    Decoders ignore trailing bytes, so every copy is still a valid image but has its own
    SHA-256: no copy is deduplicated against another (nor, with a different `salt`, against
    another benchmark mode's copies, which would hit the emulator's mesh cache).
    """
    folder.mkdir(parents=True, exist_ok=True)
    samples = sample_images()
    paths, digests = [], set()
    for i in range(count):
        sample = samples[i % len(samples)]
        path = folder / f"{i:02d}-{sample.name}"
        # The whole index, not one byte of it: `i % 256` made copy i and copy i + 768 (6
        # samples x 256) the same bytes, so N=1,000 ran 768 predictions.
        data = sample.read_bytes() + salt + i.to_bytes(4, "big")
        digests.add(hashlib.sha256(data).digest())
        path.write_bytes(data)
        paths.append(path)
    if len(digests) != count:
        raise AssertionError(f"{count - len(digests)} of {count} benchmark images are copies")
    return paths


@contextmanager
def dagster_home(parent: Path) -> Iterator:
    """A persistent SQLite DagsterInstance in a fresh DAGSTER_HOME under `parent`."""
    import dagster as dg

    home = parent / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            yield instance
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous


BENCH_PIPELINE = "bench"  # the name of every benchmark's pipeline (asset keys bench/meshes, ...)


def bench_pipeline(images: Path | str, store: Path | str, base_url: str, **options):
    """The shipping pipeline (`build_mesh_pipeline`, shipping defaults unless `options` say
    otherwise) named `bench`, over `images` and `store`, against the API at `base_url`."""
    from hunyuan_assets.integration.factory import build_mesh_pipeline

    return build_mesh_pipeline(
        BENCH_PIPELINE, images=str(images), store=str(store), base_url=base_url, **options
    )


def image_keys(pipeline) -> list[str]:
    """The partition keys of the pipeline's images, in listing order."""
    images = pipeline.resources[pipeline.settings.images_resource]
    return [ref.partition_key for ref in images.open().list_images()]


def prediction_log_of(pipeline):
    """The pipeline's PredictionLog (in its mesh store)."""
    return pipeline.resources[pipeline.settings.mesh_store_resource].prediction_log()


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


class Timer:
    """`with Timer() as t: ...` then `t.seconds`."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self.start


def best_cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    """The least CPU time (`time.process_time`, all threads) of `repeat` calls, in ms."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best * 1000


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers are expected pre-formatted as strings."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    return (
        f"{os.cpu_count()} CPU(s), Python {platform.python_version()}, {platform.system()} "
        f"{platform.machine()}"
    )


def report(title: str, body: str, notes: Sequence[str] = ()) -> str:
    """The text a benchmark prints (and `run_all.py` collects)."""
    parts = [f"### {title}", "", body]
    if notes:
        parts += ["", *[f"- {note}" for note in notes]]
    return "\n".join(parts) + "\n"
