"""Does the emulator keep up? N distinct pictures, C in flight, through AsyncHunyuan3DClient.

The emulator runs as its own process (`python -m hunyuan_assets.emulator`), so its peak RSS
(VmHWM) and CPU time are its own. Each of the N pictures (the bundled samples with bytes
appended, so every one is synthesised) is uploaded, submitted, waited for and downloaded,
at most C at a time. The emulator's `late_ms` says how long after the configured latency
predictions finished; the client's wall time per picture adds upload, polling and download.

    python bench/bench_emulator.py [--images 1000] [--in-flight 300] [--latency 20]
                                   [--profile small] [--poll 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, machine, make_images, quiet, report, table, temp_dir


def _proc_status(pid: int, field: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmHWM: peak RSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def _one(client, semaphore, path: Path, out: Path, phases: dict[str, list[float]]) -> None:
    async with semaphore:
        marks = [time.monotonic()]
        url = await client.upload(path)
        marks.append(time.monotonic())
        prediction = await client.submit(url)
        marks.append(time.monotonic())
        done = await client.wait(prediction)
        marks.append(time.monotonic())
        await client.download(done.outputs[0], out / f"{path.stem}.glb")
        marks.append(time.monotonic())
        for name, start, end in zip(PHASES, marks, marks[1:], strict=False):
            phases[name].append(end - start)
        phases["total"].append(marks[-1] - marks[0])


PHASES = ("upload", "submit", "wait", "download")


async def _drive(base_url: str, images: list[Path], out: Path, in_flight: int, poll: float):
    from hunyuan_assets.client import AsyncHunyuan3DClient, ClientSettings, PollPolicy

    settings = ClientSettings(
        api_key="bench-key",
        base_url=base_url,
        poll=PollPolicy(initial_interval=poll, max_interval=poll, deadline=3600),
    )
    phases: dict[str, list[float]] = {name: [] for name in (*PHASES, "total")}
    semaphore = asyncio.Semaphore(in_flight)
    async with AsyncHunyuan3DClient(settings) as client:
        await asyncio.gather(*(_one(client, semaphore, p, out, phases) for p in images))
    return phases


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=300)
    parser.add_argument("--latency", type=float, default=20.0)
    parser.add_argument("--profile", default="small", choices=("small", "realistic"))
    parser.add_argument("--poll", type=float, default=1.0, help="fixed poll interval, s")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that runs the emulator (another checkout's .venv/bin/python, "
        "to compare versions)",
    )
    args = parser.parse_args()
    quiet()
    import httpx

    with temp_dir("bench-emulator-") as tmp:
        images = make_images(tmp / "images", args.images, salt=b"bench-emulator")
        (tmp / "out").mkdir()
        command = [args.python, "-m", "hunyuan_assets.emulator", "--latency", str(args.latency)]
        if args.profile != "small":  # the default; older emulators do not know the flag
            command += ["--output-profile", args.profile]
        # <checkout>/.venv/bin/python: run it in its checkout (not resolved: a venv links out)
        cwd = Path(args.python).absolute().parents[2] if args.python != sys.executable else ROOT
        emulator = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=cwd)
        try:
            assert emulator.stdout is not None
            base_url = emulator.stdout.readline().strip().split("=", 1)[1]
            cpu_before = _cpu_seconds(emulator.pid)
            started, client_cpu = time.monotonic(), time.process_time()
            phases = asyncio.run(_drive(base_url, images, tmp / "out", args.in_flight, args.poll))
            elapsed = time.monotonic() - started
            client_cpu = time.process_time() - client_cpu
            cpu = _cpu_seconds(emulator.pid) - cpu_before
            peak_rss = _proc_status(emulator.pid, "VmHWM")
            stats = httpx.get(f"{base_url}/_emulator/stats").json()
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)
        downloaded = sum(p.stat().st_size for p in (tmp / "out").iterdir())

    late = stats.get("late_ms") or {"p50": None, "p95": None, "max": None}  # older emulators
    rows = [
        ["predictions completed", f"{stats['predictions']['completed']} / {args.images}"],
        [
            "emulator: finished after latency, p50 / p95 / max",
            " / ".join(
                "n/a" if late[k] is None else f"{late[k] / 1000:.2f}" for k in ("p50", "p95", "max")
            )
            + " s",
        ],
        [
            "client: wall per picture / latency, p50 / p95",
            (
                f"{_pct(phases['total'], 0.5) / args.latency:.2f} / "
                f"{_pct(phases['total'], 0.95) / args.latency:.2f}"
            ),
        ],
        [
            "client: upload / submit / wait / download, p50",
            " / ".join(f"{_pct(phases[name], 0.5):.2f}" for name in PHASES) + " s",
        ],
        ["throughput", f"{args.images / elapsed:.1f} predictions/s over {elapsed:.0f} s"],
        [
            "CPU per prediction: emulator / client",
            (f"{cpu / args.images * 1000:.0f} / {client_cpu / args.images * 1000:.0f} ms"),
        ],
        ["CPU used / available", f"{(cpu + client_cpu) / (elapsed * (os.cpu_count() or 1)):.0%}"],
        ["emulator peak RSS", f"{peak_rss / 2**20:.0f} MiB"],
        ["bytes downloaded", f"{downloaded / 2**20:.0f} MiB"],
    ]
    print(
        report(
            f"Emulator under load: {args.images} pictures, {args.in_flight} in flight, "
            f"{args.profile} outputs, latency {args.latency:g} s",
            table(["measure", "value"], rows),
            [
                machine() + "; the client runs on the same cores (indicative figures).",
                f"Polling every {args.poll:g} s, so the client sees completion up to that late.",
            ],
        )
    )


if __name__ == "__main__":
    main()
