"""`python -m hunyuan_assets.emulator`: print `WAVESPEED_BASE_URL=...` and serve until a signal.

The single stdout line is the contract (scripts read it to find the port); logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from hunyuan_assets.emulator.server import OUTPUT_PROFILES, SYNTHESIS_MODES, EmulatorServer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hunyuan_assets.emulator", description="Local WaveSpeed v3 API emulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per prediction")
    parser.add_argument("--jitter", type=float, default=0.0, help="+- seconds on the latency")
    parser.add_argument("--output-ttl", type=float, default=None, help="output URL lifetime, s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output-profile",
        choices=OUTPUT_PROFILES,
        default="small",
        help="small: quick test meshes; realistic: the real model's size (~40k faces, "
        "2048 px PBR textures, ~3.5 MB)",
    )
    parser.add_argument(
        "--synthesis",
        choices=SYNTHESIS_MODES,
        default="processes",
        help="where meshes are made: worker processes (default; requests never wait for a "
        "synthesis to let go of the GIL) or threads of the server's own process",
    )
    parser.add_argument(
        "--faults", default=None, help="JSON, the same body as POST /_emulator/faults"
    )
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )

    server = EmulatorServer(
        args.host,
        args.port,
        latency=args.latency,
        jitter=args.jitter,
        output_ttl=args.output_ttl,
        seed=args.seed,
        output_profile=args.output_profile,
        synthesis=args.synthesis,
    )
    if args.faults:
        try:
            server.configure(**json.loads(args.faults))
        except (ValueError, TypeError) as exc:
            parser.error(f"--faults: {exc}")

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    with server:
        print(f"WAVESPEED_BASE_URL={server.base_url}", flush=True)
        stopping.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
