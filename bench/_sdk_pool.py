"""What a team would write instead of us: the official SDK in a thread pool (a helper process
of bench_vs_sdk.py, measured from outside; not a benchmark itself).

    python bench/_sdk_pool.py IMAGES_DIR OUT_DIR --workers C

Each worker uploads an image, runs the model (submit + poll every second) and downloads the
GLB, as the SDK's README shows; the emulator's base URL comes from WAVESPEED_BASE_URL.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wavespeed import Client

MODEL = "wavespeed-ai/hunyuan3d/v2.1"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("images", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--workers", type=int, required=True)
    args = parser.parse_args()
    client = Client(api_key="bench-key", base_url=os.environ["WAVESPEED_BASE_URL"])
    args.out.mkdir(parents=True, exist_ok=True)

    def one(path: Path) -> int:
        url = client.upload(str(path))
        result = client.run(MODEL, {"image": url})
        dest = args.out / f"{path.stem}.glb"
        urllib.request.urlretrieve(result["outputs"][0], dest)
        return dest.stat().st_size

    paths = sorted(p for p in args.images.iterdir() if p.is_file())
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        sizes = list(pool.map(one, paths))
    print(f"{len(sizes)} meshes, {sum(sizes)} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
