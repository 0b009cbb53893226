"""What checking one input image costs (`sources.describe_image`: header, `verify`, decode), on
photo-sized pictures, against decoding the same bytes in full, which is what the check did
before JPEG was decoded at 1/8 scale.

The pictures are the bundled samples resized to each size with a little sensor-like grain,
saved as a camera or a phone would (JPEG quality 90) and as PNG. CPU time
(`time.process_time`), best of `--repeat`, per picture, all in one run.

    python bench/bench_inputs.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from _common import best_cpu_ms, machine, report, sample_images, table
from PIL import Image

SIZES = ((1280, 960), (2592, 1944), (4000, 3000))  # 1.2, 5 and 12 MP


def _photo(sample: Image.Image, size: tuple[int, int], seed: int) -> np.ndarray:
    big = np.asarray(sample.convert("RGB").resize(size, Image.Resampling.BICUBIC), np.float32)
    grain = np.random.default_rng(seed).normal(0.0, 3.0, big.shape).astype(np.float32)
    return np.clip(big + grain, 0, 255).astype(np.uint8)


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    options = {"quality": 90} if fmt == "JPEG" else {"compress_level": 6}
    Image.fromarray(pixels).save(out, fmt, **options)
    return out.getvalue()


def _full_decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as im:
        im.load()


def main() -> str:
    from hunyuan_assets.core.sources import describe_image

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    samples = [Image.open(path) for path in sample_images()[:3]]
    rows = []
    for fmt in ("JPEG", "PNG"):
        for width, height in SIZES:
            checks, fulls, sizes = [], [], []
            for seed, sample in enumerate(samples):
                data = _encoded(_photo(sample, (width, height), seed), fmt)
                sizes.append(len(data))
                checks.append(best_cpu_ms(lambda: describe_image(data), args.repeat))  # noqa: B023
                fulls.append(best_cpu_ms(lambda: _full_decode(data), args.repeat))  # noqa: B023
            check, full = float(np.mean(checks)), float(np.mean(fulls))
            rows.append(
                [
                    fmt,
                    f"{width} x {height} ({width * height / 1e6:.1f} MP)",
                    f"{np.mean(sizes) / 2**20:.1f}",
                    f"{check:.1f}",
                    f"{full:.1f}",
                    f"{check / full:.2f}x",
                ]
            )
    headers = ["format", "size", "MiB", "check ms", "full decode ms", "check vs full decode"]
    notes = [
        f"{machine()}; CPU ms, best of {args.repeat}, mean over {len(samples)} pictures.",
        "The check also hashes the bytes (sha256) and runs Pillow's `verify`; a JPEG is "
        "decoded at 1/8 scale, a PNG in full (it has no such scaling).",
    ]
    return report("Checking an input image: photo sizes", table(headers, rows), notes)


if __name__ == "__main__":
    print(main())
