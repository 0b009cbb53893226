"""Result requests per prediction and noticing delay: learned polling, our adaptive polling and
the SDK's fixed 1 s.

For each emulator latency and each poller, K predictions run at once (threads), each poller
against its own in-process emulator with the same seed, latency and jitter (so every poller
sees the same set of task durations; jitter keeps completions from lining up with poll ticks):
- the official `wavespeed` SDK 2.0.5 (`Client(api_key=..., base_url=...)`, `run()`: one GET
  right after the submit, then one every `poll_interval=1.0` s, fixed);
- our `Hunyuan3DClient.submit()` + `wait(prediction)` with the default `PollPolicy`
  (first poll after 2 s, x1.5 per poll, capped at 20 s), and with a fast profile;
- our default policy called by id, `wait(prediction_id)` (resuming after a crash): it polls
  at once first, as the task may have finished long ago;
- ours, learned: `wait(prediction, forecast=history.forecast(model))` with the default policy,
  recording each `.observation` into a `PollHistory` (a real one, over a temporary
  `LocalMeshStore`). Before the measured round it is trained with `--train-waves` waves of
  `--train` predictions on a separate emulator (same latency and jitter, another seed), each
  wave forecasting from the ones before: the first wave has no forecast (adaptive schedule).

Requests are counted by the emulator; "noticing delay" is the time from the task's completion
inside the emulator to the poller seeing it (`EmulatorServer.timeline`: the API has no
completion timestamp). Each emulator's mesh cache is warmed first, so mesh synthesis does not
compete for the CPU.

The projected table replays the same schedules without any network (the real `_WaitPlan`,
the core both client shells share, on a fake clock) for 3 s, 20 s and 120 s tasks +- 20 %;
the learned one after 30 simulated tasks, reporting `timings.inference` as the emulator does.

    python bench/bench_polling.py [--latencies 3 20] [--per-poller 20] [--train 5]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import machine, quiet, report, sample_images, table

API_KEY = "bench-key"
SEED = 7
JITTER_FRACTION = 0.2  # task durations uniform in latency +- 20 %
SUBMIT_SPACING_S = 0.03
PROJECTED_TASKS = (3.0, 20.0, 120.0)
LEARNED = "ours, learned (default policy + forecast from past waits)"


@dataclass(frozen=True)
class Poller:
    name: str
    kind: str  # "sdk" | "ours"
    policy: object | None = None
    by_id: bool = False
    learned: bool = False


def _pollers() -> list[Poller]:
    from hunyuan_assets.client import PollPolicy

    default = PollPolicy()
    fast = PollPolicy(initial_interval=1.0, max_interval=4.0, multiplier=1.5)
    return [
        Poller("WaveSpeed SDK 2.0.5 (fixed 1 s)", "sdk"),
        Poller(
            f"ours, default ({default.initial_interval:g} s, x{default.multiplier:g}, "
            f"cap {default.max_interval:g} s)",
            "ours",
            default,
        ),
        Poller("ours, default, resuming by id (after a crash)", "ours", default, by_id=True),
        Poller(
            f"ours, fast ({fast.initial_interval:g} s, x{fast.multiplier:g}, "
            f"cap {fast.max_interval:g} s)",
            "ours",
            fast,
        ),
        Poller(LEARNED, "ours", default, learned=True),
    ]


# --------------------------------------------------------------------------- projection


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def _sdk_schedule(task_s: float) -> tuple[int, float]:
    """(result GETs, delay) of the SDK: a GET right after the submit, then one per second."""
    tick, polls = 0.0, 1
    while tick < task_s:
        tick += 1.0
        polls += 1
    return polls, tick - task_s


def _simulated_wait(duration: float, poller: Poller, forecast, start: datetime):
    """(GETs, delay, observation) of our wait on a task that ends `duration` s after the
    submit: the real `_WaitPlan` on a fake clock (request times taken as zero)."""
    from hunyuan_assets.client import DEFAULT_MODEL, parse_prediction
    from hunyuan_assets.client.protocol import _WaitPlan

    clock = [0.0]

    def wall() -> datetime:
        return start + timedelta(seconds=clock[0])

    def answer(status: str, inference_ms: int = 0) -> dict:
        return {
            "id": "p",
            "model": DEFAULT_MODEL,
            "status": status,
            "outputs": ["http://o/m"],
            "created_at": start.isoformat(),
            "timings": {"inference": inference_ms},
        }

    submitted = parse_prediction(answer("created"), submitted_at=start)
    target = submitted.id if poller.by_id else submitted
    plan = _WaitPlan(target, poller.policy, None, lambda: clock[0], forecast=forecast, now=wall)
    while True:
        clock[0] += plan.next_delay()
        done = clock[0] >= duration
        # As the emulator: model time is the task minus its short `created` phase.
        model_ms = round(1000 * (duration - min(0.1 * duration, 0.5)))
        seen = plan.observe(
            parse_prediction(answer("completed" if done else "processing", model_ms if done else 0))
        )
        if plan.finish(seen):
            return seen.polls, clock[0] - duration, seen.observation


def _projected(
    pollers: list[Poller], task_s: float, jitter: float = JITTER_FRACTION, points: int = 401
) -> dict[str, tuple]:
    """Mean GETs, mean and max delay per poller over task lengths uniform in task_s +- jitter
    (0: every task takes task_s, as a warm model or the emulator's default)."""
    from hunyuan_assets.client import forecast_completion

    low, high = task_s * (1 - jitter), task_s * (1 + jitter)
    grid = [low + (high - low) * i / (points - 1) for i in range(points)]
    rng, observations = random.Random(SEED), []
    learned = next(p for p in pollers if p.learned)
    for i in range(30):  # learn as a run would: each wait forecasts from the ones before
        start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=i)
        duration = rng.uniform(low, high)
        _, _, seen = _simulated_wait(duration, learned, forecast_completion(observations), start)
        observations.append(seen)
    forecast = forecast_completion(observations)
    out = {}
    for poller in pollers:
        if poller.kind == "sdk":
            results = [_sdk_schedule(d) for d in grid]
        else:
            start = datetime(2026, 2, 1, tzinfo=UTC)
            chosen = forecast if poller.learned else None
            results = [_simulated_wait(d, poller, chosen, start)[:2] for d in grid]
        delays = [r[1] for r in results]
        out[poller.name] = (
            statistics.mean(r[0] for r in results),
            statistics.mean(delays),
            max(delays),
        )
    return out


def _cold_wave(count: int, task_s: float, *, learn: bool, seed: int) -> tuple[float, float]:
    """(mean noticing delay, GETs per prediction) of `count` predictions submitted together
    on a fresh store, each ending after task_s +- 20 % (seeded), on a fake clock. Learning,
    they share one forecast source (the run's observations) and, once it has a window, every
    wait still on the default schedule plans again (`replan`), as `AsyncHunyuan3DClient.wait`
    does when `MeshGenerator` sets its `wake` event."""
    from hunyuan_assets.client import DEFAULT_MODEL, forecast_completion, parse_prediction
    from hunyuan_assets.client.polling import PollPolicy
    from hunyuan_assets.client.protocol import _WaitPlan

    start, clock, observations = datetime(2026, 3, 1, tzinfo=UTC), [0.0], []
    rng = random.Random(seed)
    ends = [task_s * rng.uniform(1 - JITTER_FRACTION, 1 + JITTER_FRACTION) for _ in range(count)]

    def answer(pid: str, status: str, inference_ms: int = 0) -> dict:
        return {
            "id": pid,
            "model": DEFAULT_MODEL,
            "status": status,
            "outputs": ["http://o/m"],
            "created_at": start.isoformat(),
            "timings": {"inference": inference_ms},
        }

    def source():
        return forecast_completion(observations)

    plans = [
        _WaitPlan(
            parse_prediction(answer(f"cold-{seed}-{i}", "created"), submitted_at=start),
            PollPolicy(),
            None,
            lambda: clock[0],
            forecast=source if learn else None,
            now=lambda: start + timedelta(seconds=clock[0]),
            stretch=learn,
        )
        for i in range(count)
    ]
    due = {i: plan.next_delay() for i, plan in enumerate(plans)}
    delays, known = [], False
    while due:
        i = min(due, key=due.__getitem__)
        clock[0] = due.pop(i)
        done = clock[0] >= ends[i]
        model_ms = round(1000 * (ends[i] - min(0.1 * ends[i], 0.5))) if done else 0
        status = "completed" if done else "processing"
        seen = plans[i].observe(parse_prediction(answer(f"cold-{seed}-{i}", status, model_ms)))
        if plans[i].finish(seen):
            delays.append(clock[0] - ends[i])
            observations.append(seen.observation)
        else:
            due[i] = clock[0] + plans[i].next_delay()
        if learn and not known and source() is not None:
            known = True
            for j in due:
                if plans[j].waiting_to_learn:
                    due[j] = clock[0] + plans[j].replan()
    return statistics.mean(delays), sum(p.polls for p in plans) / count


COLD_SEEDS = 10
COLD_WAVES = ((8, 30.0), (16, 3.0), (16, 30.0), (100, 30.0), (300, 30.0), (300, 120.0))


def _cold_wave_table() -> str:
    rows = []
    for count, task in COLD_WAVES:  # each the mean over COLD_SEEDS waves of task lengths
        plain = [_cold_wave(count, task, learn=False, seed=s) for s in range(COLD_SEEDS)]
        learned = [_cold_wave(count, task, learn=True, seed=s) for s in range(COLD_SEEDS)]
        plain_delay, plain_gets = (statistics.mean(x) for x in zip(*plain, strict=True))
        delay, gets = (statistics.mean(x) for x in zip(*learned, strict=True))
        rows.append(
            [count, f"{task:g}", f"{plain_delay:.2f}", f"{delay:.2f}",
             f"{delay / plain_delay:.2f}x", f"{plain_gets:.1f}", f"{gets:.1f}"]
        )  # fmt: skip
    return table(
        ["predictions at once", "task s", "default: mean delay s", "stretched + woken: s",
         "ratio", "default: GETs each", "stretched + woken: GETs each"],
        rows,
    )  # fmt: skip


# --------------------------------------------------------------------------- live runs


def _warm(emulator, image) -> str:
    """Upload the image, make its mesh once (latency 0), then restore config and counters."""
    from hunyuan_assets.client import ClientSettings, Hunyuan3DClient, PollPolicy

    settings = ClientSettings(
        api_key=API_KEY,
        base_url=emulator.base_url,
        poll=PollPolicy(initial_interval=0.05, max_interval=0.05),
    )
    with Hunyuan3DClient(settings) as client:
        url = client.upload(image)
        emulator.configure(latency=0.0, jitter=0.0)
        client.wait(client.submit(url))
    emulator.reset()  # back to the constructor's latency/jitter; counters zeroed
    return url


def _runner(
    poller: Poller, emulator, image_url: str, clients: list, history=None
) -> Callable[[], tuple[str, float]]:
    """A function that runs one prediction and returns (prediction id, monotonic seen-at).
    Our clients are added to `clients` for the caller to close."""
    from hunyuan_assets.client import DEFAULT_MODEL, ClientSettings, Hunyuan3DClient

    if poller.kind == "sdk":
        from wavespeed import Client

        sdk = Client(api_key=API_KEY, base_url=emulator.base_url)

        def run_sdk() -> tuple[str, float]:
            output = sdk.run(DEFAULT_MODEL, {"image": image_url}, poll_interval=1.0)
            seen = time.monotonic()
            match = re.search(r"/outputs/([^/]+)/", output["outputs"][0])
            if match is None:
                raise RuntimeError(f"no prediction id in {output['outputs'][0]}")
            return match[1], seen

        return run_sdk

    client = Hunyuan3DClient(
        ClientSettings(api_key=API_KEY, base_url=emulator.base_url, poll=poller.policy)
    )
    clients.append(client)

    def run_ours() -> tuple[str, float]:
        prediction = client.submit(image_url)
        if poller.learned:
            done = client.wait(prediction, forecast=history.forecast(DEFAULT_MODEL))
            seen = time.monotonic()
            if done.observation is not None:
                history.record(done.observation)
            return done.id, seen
        done = client.wait(prediction.id if poller.by_id else prediction)
        return done.id, time.monotonic()

    return run_ours


def _run_all(jobs: list[Callable[[], tuple[str, float]]], spread: int) -> list[tuple[str, float]]:
    barrier = threading.Barrier(len(jobs))

    def job(run: Callable[[], tuple[str, float]], index: int) -> tuple[str, float]:
        barrier.wait()
        # Spread each emulator's submits over a moment, so a burst of connects does not meet
        # a full listen backlog. The figures are per task, relative to its own completion.
        time.sleep((index % spread) * SUBMIT_SPACING_S)
        return run()

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(job, run, i) for i, run in enumerate(jobs)]
        return [f.result() for f in futures]


def _train(latencies, learned: Poller, image, histories, clients, train: int, waves: int):
    """Give each latency's PollHistory `waves` x `train` observations, wave after wave."""
    from hunyuan_assets.emulator import EmulatorServer

    emulators = [
        EmulatorServer(latency=latency, jitter=latency * JITTER_FRACTION, seed=SEED + 1).start()
        for latency in latencies
    ]
    try:
        runs = [
            _runner(learned, emulator, _warm(emulator, image), clients, histories[latency])
            for latency, emulator in zip(latencies, emulators, strict=True)
        ]
        for _ in range(waves):
            _run_all([run for run in runs for _ in range(train)], train)
    finally:
        for emulator in emulators:
            emulator.stop()


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latencies", type=float, nargs="+", default=[3.0, 20.0])
    parser.add_argument("--per-poller", type=int, default=20, help="predictions per poller")
    parser.add_argument("--train", type=int, default=5, help="learned: predictions per wave")
    parser.add_argument("--train-waves", type=int, default=3, help="learned: training waves")
    args = parser.parse_args(argv)
    quiet()
    from hunyuan_assets.client import DEFAULT_MODEL
    from hunyuan_assets.core.poll_history import PollHistory
    from hunyuan_assets.core.store import LocalMeshStore
    from hunyuan_assets.emulator import EmulatorServer

    image = next(p for p in sample_images() if p.name == "mug.png")
    pollers = _pollers()
    learned = next(p for p in pollers if p.learned)
    started = time.perf_counter()
    emulators: dict = {}
    clients: list = []
    with tempfile.TemporaryDirectory(prefix="bench-polling-") as tmp:
        histories = {
            latency: PollHistory(LocalMeshStore(Path(tmp) / f"store-{latency:g}"))
            for latency in args.latencies
        }
        try:
            _train(args.latencies, learned, image, histories, clients, args.train, args.train_waves)
            forecasts = {lat: histories[lat].forecast(DEFAULT_MODEL) for lat in args.latencies}
            jobs = []
            for latency in args.latencies:
                for poller in pollers:
                    emulator = EmulatorServer(
                        latency=latency, jitter=latency * JITTER_FRACTION, seed=SEED
                    ).start()
                    emulators[latency, poller.name] = emulator
                    url = _warm(emulator, image)
                    run = _runner(poller, emulator, url, clients, histories[latency])
                    jobs += [(latency, poller, run)] * args.per_poller
            outcomes = _run_all([run for _, _, run in jobs], args.per_poller)

            rows_by: dict[tuple[float, str], dict] = {}
            for (latency, poller, _), (pid, seen) in zip(jobs, outcomes, strict=True):
                emulator = emulators[latency, poller.name]
                timeline = emulator.timeline(pid)
                if timeline is None or timeline[1] is None:
                    raise RuntimeError(f"the emulator has no completion time for {pid}")
                entry = rows_by.setdefault((latency, poller.name), {"extra": []})
                entry["extra"].append(seen - timeline[1])
            for (latency, name), entry in rows_by.items():
                stats = emulators[latency, name].stats()
                entry["gets"] = stats["result_requests"] / max(1, stats["submissions"])
        finally:
            for client in clients:
                client.close()
            for emulator in emulators.values():
                emulator.stop()
    total = time.perf_counter() - started

    rows, ratios = [], []
    sdk_name, default_name = pollers[0].name, pollers[1].name
    for latency in args.latencies:
        sdk_gets = rows_by[latency, sdk_name]["gets"]
        for poller in pollers:
            entry = rows_by[latency, poller.name]
            gets, extra = entry["gets"], entry["extra"]
            rows.append(
                [
                    f"{latency:g}",
                    poller.name,
                    f"{gets:.1f}",
                    f"{statistics.mean(extra):.2f}",
                    f"{max(extra):.2f}",
                    "1.0x" if poller.kind == "sdk" else f"{sdk_gets / gets:.1f}x fewer",
                ]
            )
        ours, mine = rows_by[latency, default_name], rows_by[latency, LEARNED]
        fast = rows_by[latency, pollers[3].name]["gets"]
        ratios.append(
            [
                f"{latency:g} s task",
                f"{sdk_gets / ours['gets']:.1f}x fewer result requests (default), "
                f"{sdk_gets / fast:.1f}x fewer (fast), {sdk_gets / mine['gets']:.1f}x fewer "
                f"(learned); learned vs default: {mine['gets'] / ours['gets']:.2f}x the "
                f"requests, {statistics.mean(mine['extra']) / statistics.mean(ours['extra']):.2f}x "
                "the mean noticing delay",
            ]
        )
    body = table(
        [
            "task s",
            "poller",
            "result GETs / prediction",
            "mean noticing delay s",
            "max noticing delay s",
            "requests vs SDK",
        ],
        rows,
    )
    summary = table(["ours vs SDK", "ratio"], ratios)
    windows = ", ".join(
        f"{lat:g} s: {f.earliest:.1f}-{f.latest:.1f} s from {f.observations}"
        if f
        else f"{lat:g} s: none"
        for lat, f in forecasts.items()
    )

    projected = {
        (task, jitter): _projected(pollers, task, jitter)
        for jitter in (JITTER_FRACTION, 0.0)
        for task in PROJECTED_TASKS
    }
    shown = [p for p in pollers if p.name in (sdk_name, default_name, LEARNED)]
    projected_rows, projected_ratios = [], []
    for (task, jitter), figures in projected.items():
        label = f"{task:g} +- {jitter:.0%}" if jitter else f"{task:g}, all alike"
        for poller in shown:
            gets, mean_delay, max_delay = figures[poller.name]
            projected_rows.append(
                [label, poller.name, f"{gets:.1f}", f"{mean_delay:.2f}", f"{max_delay:.2f}"]
            )
        (s_gets, s_delay, _), (d_gets, d_delay, _), (l_gets, l_delay, _) = (
            figures[p.name] for p in shown
        )
        projected_ratios.append(
            [
                label,
                _ratio(l_gets, d_gets),
                _ratio(l_delay, d_delay),
                _ratio(l_gets, s_gets),
                _ratio(l_delay, s_delay),  # "-": the SDK's 1 s ticks hit whole-second tasks
            ]
        )
    summary += (
        f"\n\nLearned forecast windows after training: {windows} observations.\n\n"
        f"Projected from the poll schedules alone (no network), averaged over task lengths "
        f"+- {JITTER_FRACTION:.0%} (a typical Hunyuan3D task is reported to take ~2 min; "
        "assumed), and for tasks that all take the same time (a warm model; the emulator's "
        "default), where the learned window is the overlap of what was seen:\n\n"
        + table(
            ["task s", "poller", "result GETs / prediction", "mean delay s", "max delay s"],
            projected_rows,
        )
        + "\n\n"
        + table(
            [
                "task",
                "learned / default: GETs",
                "learned / default: delay",
                "learned / SDK: GETs",
                "learned / SDK: delay",
            ],
            projected_ratios,
        )
    )
    summary += (
        "\n\nA cold start (nothing learned yet), predictions submitted together, projected "
        "the same way: the default schedule as it is, and stretched per prediction with the "
        "waits woken once the run's first completions give a window (from 8 in flight, "
        f"as MeshGenerator does; means over {COLD_SEEDS} seeded waves):\n\n" + _cold_wave_table()
    )
    notes = [
        f"{args.per_poller} predictions per poller and task length, all concurrent; task "
        f"durations = latency +- {JITTER_FRACTION:.0%} (same seeded set for every poller); "
        f"learned trained with {args.train_waves} x {args.train} predictions first; "
        f"{machine()}; whole benchmark {total:.0f} s.",
        "Noticing delay = completion inside the emulator -> the poller sees `completed`. The "
        "adaptive policy trades delay (bounded by the current interval, at most "
        "`max_interval`) for far fewer requests; the learned one polls rarely before the "
        "forecast window and densely inside it (gap sqrt(2 (latest - t) / delay_cost)), at "
        "least 2 s apart except inside the window (>= 0.5 s, at most 4 such gaps per wait). "
        "With few samples the means move by a few tenths of a second from run to run.",
        "The provider asks for polling no faster than ~2 s and backing off for long tasks; the "
        "SDK's fixed 1 s ignores both. A wait by id (resuming after a crash) adds one "
        "immediate GET per prediction; after a submit, MeshGenerator waits on the fresh "
        "Prediction and skips it.",
    ]
    text = report("Polling: result requests and noticing delay", body + "\n\n" + summary, notes)
    print(text)
    return text


if __name__ == "__main__":
    main()
