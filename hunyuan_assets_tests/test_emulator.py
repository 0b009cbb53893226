"""The emulator over real HTTP on loopback: protocol, state machine, faults, CLI, official SDK."""

from __future__ import annotations

import io
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw

from hunyuan_assets.emulator import EmulatorServer

MODEL = "wavespeed-ai/hunyuan3d/v2.1"
KEY = "ws-test-key-0123456789abcdef"
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError)  # EOF or RST, both "no answer"


def png_bytes(color: tuple[int, int, int] = (200, 40, 40), size: int = 64) -> bytes:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse((size // 5, size // 5, size * 4 // 5, size * 4 // 5), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy; its value is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def api(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=emulator.base_url, headers=headers, timeout=10) as client:
        yield client


def upload(api: httpx.Client, data: bytes, filename: str = "cat.png") -> str:
    ticket = api.post("/api/v3/media/uploads", json={"filename": filename, "size": len(data)})
    assert ticket.status_code == 200, ticket.text
    instruction = ticket.json()["data"]["upload"]
    put = httpx.put(instruction["url"], content=data, headers=instruction["headers"])
    assert put.status_code == 200, put.text
    return ticket.json()["data"]["download_url"]


def submit(api: httpx.Client, image_url: str) -> dict:
    response = api.post(f"/api/v3/{MODEL}", json={"image": image_url})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def result(api: httpx.Client, prediction_id: str) -> dict:
    response = api.get(f"/api/v3/predictions/{prediction_id}/result")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def wait_status(api: httpx.Client, prediction_id: str, *statuses: str) -> dict:
    return wait_for(
        lambda: (data := result(api, prediction_id))["status"] in statuses and data,
        what=f"status in {statuses}",
    )


# -- protocol and state machine -----------------------------------------------------------------
def test_prediction_moves_created_processing_completed(emulator, api):
    emulator.configure(hold=True)
    image_url = upload(api, png_bytes(), "red ball.png")
    response = api.post(f"/api/v3/{MODEL}", json={"image": image_url})
    envelope = response.json()
    assert response.status_code == 200
    assert (envelope["code"], envelope["message"]) == (200, "success")
    created = envelope["data"]
    assert created["status"] == "created"
    assert created["model"] == MODEL
    assert created["outputs"] == [] and created["has_nsfw_contents"] == []
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", created["created_at"])
    assert (
        created["urls"]["get"] == f"{emulator.base_url}/api/v3/predictions/{created['id']}/result"
    )

    processing = wait_status(api, created["id"], "processing")
    assert processing["outputs"] == []
    emulator.configure(hold=False)
    done = wait_status(api, created["id"], "completed", "failed")

    assert done["status"] == "completed", done["error"]
    assert done["error"] == ""
    assert len(done["outputs"]) == 1 and done["has_nsfw_contents"] == [False]
    assert isinstance(done["timings"]["inference"], int) and done["timings"]["inference"] > 0
    glb = httpx.get(done["outputs"][0])
    assert glb.status_code == 200
    assert glb.headers["content-type"] == "model/gltf-binary"
    assert glb.content[:4] == b"glTF"


def test_hold_keeps_predictions_processing_past_the_latency(emulator, api):
    emulator.configure(latency=0, hold=True)
    prediction = submit(api, upload(api, png_bytes()))
    wait_status(api, prediction["id"], "processing")
    for _ in range(5):  # latency 0 has long passed; only the hold keeps it back
        assert result(api, prediction["id"])["status"] == "processing"
    emulator.configure(hold=False)
    assert wait_status(api, prediction["id"], "completed")["outputs"]


def test_input_fetched_over_http_from_another_server(api, tmp_path):
    (tmp_path / "chair.png").write_bytes(png_bytes((30, 90, 200)))
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as images:
        threading.Thread(target=images.serve_forever, daemon=True).start()
        try:
            base = f"http://127.0.0.1:{images.server_address[1]}"
            ok = submit(api, f"{base}/chair.png")
            missing = submit(api, f"{base}/nope.png")
            assert wait_status(api, ok["id"], "completed", "failed")["status"] == "completed"
            failed = wait_status(api, missing["id"], "completed", "failed")
        finally:
            images.shutdown()
    assert failed["status"] == "failed"
    assert failed["error"] == "could not fetch input image: HTTP 404"
    assert failed["outputs"] == []


def test_url_that_is_not_an_image_fails_with_a_clear_error(api):
    text_url = upload(api, b"just some notes", "notes.txt")
    prediction = submit(api, text_url)
    failed = wait_status(api, prediction["id"], "completed", "failed")
    assert failed["status"] == "failed"
    assert failed["error"].startswith("input is not a decodable image")
    unreachable = submit(api, "http://127.0.0.1:9/cat.png")  # discard port: refused
    failed = wait_status(api, unreachable["id"], "completed", "failed")
    assert failed["error"].startswith("could not fetch input image: ConnectError")


def test_auth_is_required_on_the_api_but_not_on_presigned_urls(emulator, api):
    base = emulator.base_url
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": f"Basic {KEY}"}):
        submitted = httpx.post(f"{base}/api/v3/{MODEL}", json={"image": "x"}, headers=headers)
        assert submitted.status_code == 401
        assert submitted.json()["code"] == 401 and submitted.json()["message"]
    assert httpx.get(f"{base}/api/v3/predictions/abc/result").status_code == 401
    assert httpx.post(f"{base}/api/v3/media/uploads", json={}).status_code == 401
    assert httpx.get(f"{base}/api/v3/no/such/thing").status_code == 401
    assert emulator.stats()["submissions"] == 0
    media_url = upload(api, png_bytes())  # the PUT inside carries no Authorization header
    assert httpx.get(media_url).status_code == 200


def test_bad_requests_get_the_api_error_envelope(api):
    cases = [
        (api.post(f"/api/v3/{MODEL}", json={}), 400, 1400),
        (api.post(f"/api/v3/{MODEL}", json={"image": 42}), 400, 1401),
        (api.post(f"/api/v3/{MODEL}", json={"image": "file:///etc/passwd"}), 400, 1401),
        (api.post(f"/api/v3/{MODEL}", content=b"not json"), 400, 1400),
        (api.get("/api/v3/predictions/0123abcd/result"), 404, 404),
        (api.post("/api/v3/media/uploads", json={"size": 3}), 400, 1400),
        (
            api.post("/api/v3/media/uploads", json={"filename": "a.png", "size": 300 * 2**20}),
            400,
            1401,
        ),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["code"] == code and response.json()["message"]


def test_upload_ticket_put_and_download(emulator, api):
    data = png_bytes()
    ticket = api.post(
        "/api/v3/media/uploads",
        json={"filename": "my cat.png", "size": len(data), "content_type": "image/png"},
    ).json()["data"]
    assert ticket["upload"]["method"] == "PUT"
    assert ticket["upload"]["headers"] == {"Content-Type": "image/png"}
    assert "my%20cat.png" in ticket["download_url"]
    assert httpx.get(ticket["download_url"]).status_code == 404  # nothing PUT yet

    put = httpx.put(ticket["upload"]["url"], content=data, headers=ticket["upload"]["headers"])
    assert put.status_code == 200 and put.headers["etag"]
    media = httpx.get(ticket["download_url"])
    assert (media.status_code, media.content) == (200, data)
    assert media.headers["content-type"] == "image/png"

    forged = ticket["upload"]["url"].replace("my%20cat.png", "other.png")
    assert httpx.put(forged, content=b"x").status_code == 403
    assert emulator.stats()["uploads"] == 1


def test_legacy_multipart_upload(api):
    data = png_bytes() + b"\r\n--tricky\r\n\r\n"  # binary that looks like multipart framing
    response = api.post(
        "/api/v3/media/upload/binary", files={"file": ("legacy.png", data, "image/png")}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 200 and body["data"]["size"] == len(data)
    assert httpx.get(body["data"]["download_url"]).content == data


def test_prediction_ids_are_unique_across_emulators_with_the_same_seed(api, emulator):
    with EmulatorServer(latency=0.2) as other:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=other.base_url, headers=headers) as other_api:
            other_id = submit(other_api, "http://127.0.0.1:9/a.png")["id"]
    assert re.fullmatch(r"[0-9a-f]{32}", other_id)
    assert submit(api, "http://127.0.0.1:9/a.png")["id"] != other_id


def test_concurrent_submissions_are_all_tracked(emulator, api):
    image_url = upload(api, png_bytes())
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: submit(api, image_url)["id"], range(16)))
    assert len(set(ids)) == 16
    wait_for(lambda: emulator.stats()["predictions"]["completed"] == 16, what="16 completed")
    assert emulator.stats()["submissions"] == 16


# -- faults -------------------------------------------------------------------------------------
def test_rate_limit_with_retry_after(emulator, api):
    emulator.configure(rules=[{"endpoint": "submit", "kind": "429", "retry_after": 2}])
    limited = api.post(f"/api/v3/{MODEL}", json={"image": "http://x/cat.png"})
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    assert limited.json()["code"] == 429
    assert api.post(f"/api/v3/{MODEL}", json={"image": "http://x/cat.png"}).status_code == 200
    stats = emulator.stats()
    assert (stats["faults_injected"], stats["submissions"]) == (1, 1)


def test_server_errors_then_recovery(emulator, api):
    prediction = submit(api, upload(api, png_bytes()))
    emulator.configure(rules=[{"endpoint": "result", "kind": "503", "count": 2}])
    statuses = [api.get(f"/api/v3/predictions/{prediction['id']}/result") for _ in range(3)]
    assert [r.status_code for r in statuses] == [503, 503, 200]
    assert statuses[0].json()["code"] == 503
    emulator.configure(rules=[{"endpoint": "upload_put", "kind": "500"}])
    ticket = api.post("/api/v3/media/uploads", json={"filename": "a.png"}).json()["data"]
    assert httpx.put(ticket["upload"]["url"], content=b"x").status_code == 500


def test_drop_closes_the_connection_and_creates_nothing(emulator, api):
    emulator.configure(rules=[{"endpoint": "submit", "kind": "drop"}])
    with pytest.raises(DROPPED):
        api.post(f"/api/v3/{MODEL}", json={"image": "http://x/cat.png"})
    stats = emulator.stats()
    assert stats["submissions"] == 0 and sum(stats["predictions"].values()) == 0
    assert stats["faults_injected"] == 1


def test_drop_after_accept_creates_the_prediction_but_never_answers(emulator, api):
    emulator.configure(rules=[{"endpoint": "submit", "kind": "drop_after_accept"}])
    with pytest.raises(DROPPED):
        api.post(f"/api/v3/{MODEL}", json={"image": upload(api, png_bytes())})
    assert emulator.stats()["submissions"] == 1
    wait_for(lambda: emulator.stats()["predictions"]["completed"] == 1, what="orphan completes")


def test_slow_responses(emulator, api):
    emulator.configure(rules=[{"endpoint": "any", "kind": "slow", "delay": 0.4}])
    started = time.monotonic()
    response = api.get("/api/v3/predictions/unknown/result")
    assert response.status_code == 404
    assert time.monotonic() - started >= 0.4
    api.get("/api/v3/predictions/unknown/result")
    assert emulator.stats()["faults_injected"] == 1  # count 1 by default: the rule is spent


def test_rules_select_inputs_by_url_substring(emulator, api):
    good, bad = upload(api, png_bytes(), "good.png"), upload(api, png_bytes(), "bad.png")
    emulator.configure(rules=[{"endpoint": "submit", "kind": "502", "count": -1, "match": "bad"}])
    assert api.post(f"/api/v3/{MODEL}", json={"image": bad}).status_code == 502
    assert api.post(f"/api/v3/{MODEL}", json={"image": bad}).status_code == 502
    assert api.post(f"/api/v3/{MODEL}", json={"image": good}).status_code == 200


def test_fail_tasks_and_nsfw(emulator, api):
    emulator.configure(fail_tasks={"match": "broken", "error": "GPU fell over"}, nsfw={"count": 1})
    broken = submit(api, upload(api, png_bytes(), "broken.png"))
    flagged = submit(api, upload(api, png_bytes(), "first.png"))
    clean = submit(api, upload(api, png_bytes(), "second.png"))
    failed = wait_status(api, broken["id"], "completed", "failed")
    assert (failed["status"], failed["error"]) == ("failed", "GPU fell over")
    assert wait_status(api, flagged["id"], "completed")["has_nsfw_contents"] == [True]
    assert wait_status(api, clean["id"], "completed")["has_nsfw_contents"] == [False]


def test_output_and_media_faults(emulator, api):
    media_url = upload(api, png_bytes())
    done = wait_status(api, submit(api, media_url)["id"], "completed")
    emulator.configure(
        rules=[{"endpoint": "output", "kind": "504"}, {"endpoint": "media", "kind": "drop"}]
    )
    assert httpx.get(done["outputs"][0]).status_code == 504
    assert httpx.get(done["outputs"][0]).status_code == 200
    with pytest.raises(DROPPED):
        httpx.get(media_url)


def test_invalid_fault_settings_are_rejected_without_changes(emulator):
    before = httpx.get(f"{emulator.base_url}/_emulator/faults").json()
    bad = [
        {"rules": [{"endpoint": "submit", "kind": "418"}]},
        {"latency": -1},
        {"hold": "yes"},
        {"latency": 5, "surprise": 1},
    ]
    for body in bad:
        response = httpx.post(f"{emulator.base_url}/_emulator/faults", json=body)
        assert response.status_code == 400 and response.json()["message"]
    assert httpx.get(f"{emulator.base_url}/_emulator/faults").json() == before
    with pytest.raises(ValueError):
        emulator.configure(rules=[{"endpoint": "nowhere", "kind": "500"}])


def test_outputs_expire(emulator, api):
    done = wait_status(api, submit(api, upload(api, png_bytes()))["id"], "completed")
    assert httpx.get(done["outputs"][0]).status_code == 200
    emulator.configure(output_ttl=0)  # the current TTL applies to old outputs too
    expired = httpx.get(done["outputs"][0])
    assert expired.status_code == 403
    assert b"Request has expired" in expired.content
    assert httpx.get(done["outputs"][0].replace("/mesh.glb", "x/mesh.glb")).status_code == 404


def test_output_ttl_from_the_constructor():
    with EmulatorServer(latency=0, output_ttl=0.3) as emulator:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=emulator.base_url, headers=headers) as api:
            done = wait_status(api, submit(api, upload(api, png_bytes()))["id"], "completed")
            wait_for(lambda: httpx.get(done["outputs"][0]).status_code == 403, what="expiry")


# -- control --------------------------------------------------------------------------------------
def test_stats_counters_and_reset(emulator, api):
    prediction = submit(api, upload(api, png_bytes()))
    done = wait_status(api, prediction["id"], "completed")
    httpx.get(done["outputs"][0])
    emulator.configure(rules=[{"endpoint": "result", "kind": "500", "count": -1}], hold=True)
    api.get(f"/api/v3/predictions/{prediction['id']}/result")

    stats = httpx.get(f"{emulator.base_url}/_emulator/stats").json()
    assert stats == emulator.stats()
    assert stats["submissions"] == 1 and stats["uploads"] == 1
    assert stats["output_downloads"] == 1 and stats["faults_injected"] == 1
    # Named counters count what was served; `requests` also counts the faulted poll.
    assert stats["requests"]["result"] == stats["result_requests"] + 1
    assert stats["predictions"] == {"created": 0, "processing": 0, "completed": 1, "failed": 0}
    assert stats["requests"]["submit"] == 1

    assert httpx.post(f"{emulator.base_url}/_emulator/reset").status_code == 200
    stats = emulator.stats()
    assert stats["submissions"] == stats["faults_injected"] == stats["result_requests"] == 0
    assert stats["predictions"]["completed"] == 1  # predictions survive a reset
    assert result(api, prediction["id"])["status"] == "completed"  # the 500 rule is gone
    assert httpx.get(f"{emulator.base_url}/_emulator/faults").json()["hold"] is False


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_prints_the_base_url_and_stops_on_sigterm_and_sigint():
    command = [sys.executable, "-m", "hunyuan_assets.emulator", "--host", "127.0.0.1", "--port"]
    command += ["0", "--latency", "0.1", "--jitter", "0", "--seed", "7", "--output-ttl", "60"]
    cwd = Path(__file__).resolve().parents[1]
    # Both at once: start-up (imports) is most of the cost.
    processes = {
        signum: subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
        )
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        for signum, process in processes.items():
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 60)
            assert ready, "the emulator printed nothing within 60 s"
            line = process.stdout.readline()
            match = re.fullmatch(r"WAVESPEED_BASE_URL=(http://127\.0\.0\.1:\d+)\n", line)
            assert match, line
            base = match[1]
            assert httpx.get(f"{base}/_emulator/stats").json()["submissions"] == 0
            assert httpx.post(f"{base}/api/v3/{MODEL}", json={"image": "x"}).status_code == 401
            process.send_signal(signum)
            stdout, stderr = process.communicate(timeout=10)
            assert process.returncode == 0, stderr
            assert stdout == ""  # exactly one line on stdout
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


# -- the official SDK, unchanged ------------------------------------------------------------------
def test_official_sdk_uploads_runs_and_gets_outputs(emulator, tmp_path, capsys):
    import wavespeed

    image = tmp_path / "teapot.png"
    image.write_bytes(png_bytes((20, 160, 60)))
    client = wavespeed.Client(
        api_key=KEY, base_url=emulator.base_url, max_connection_retries=3, retry_interval=0.05
    )
    image_url = client.upload(str(image))
    assert "teapot.png" in image_url

    emulator.configure(rules=[{"endpoint": "result", "kind": "503"}])  # the SDK retries polls
    output = client.run(MODEL, {"image": image_url}, timeout=30, poll_interval=0.05)
    assert len(output["outputs"]) == 1
    assert httpx.get(output["outputs"][0]).content[:4] == b"glTF"
    assert "Server error (HTTP 503)" in capsys.readouterr().out  # the SDK prints its retries

    synced = client.run(MODEL, {"image": image_url}, enable_sync_mode=True, timeout=30)
    assert len(synced["outputs"]) == 1

    emulator.configure(fail_tasks={"count": 1, "error": "out of GPUs"})
    with pytest.raises(RuntimeError, match="out of GPUs"):
        client.run(MODEL, {"image": image_url}, timeout=30, poll_interval=0.05)
    outcome = client.run_no_throw(
        MODEL, {"image": "http://127.0.0.1:9/x.png"}, timeout=30, poll_interval=0.05
    )
    assert outcome["status"] == "failed" and "could not fetch input image" in outcome["error"]
    assert client.get_result(outcome["task_id"])["data"]["status"] == "failed"


# -- predictions list, retention, balance ------------------------------------------------------
class WallClock:
    """A wall clock moved by hand, for `created_at` and the retention."""

    def __init__(self) -> None:
        from datetime import UTC, datetime

        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self):
        return self.now

    def advance(self, **delta: float) -> None:
        from datetime import timedelta

        self.now += timedelta(**delta)


def list_page(api: httpx.Client, **body: Any) -> dict:
    response = api.post("/api/v3/predictions", json={"page": 1, "page_size": 100} | body)
    assert response.status_code == 200, response.text
    assert response.json()["code"] == 200
    return response.json()["data"]


@pytest.fixture
def clocked() -> Iterator[tuple[EmulatorServer, WallClock, httpx.Client]]:
    clock = WallClock()
    with EmulatorServer(latency=0.0, clock=clock, balance=10.0, price=0.5) as server:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as api:
            yield server, clock, api


def test_list_is_newest_first_paged_and_never_shows_the_input(emulator, api):
    images = [f"http://127.0.0.1:9/{name}.png" for name in ("first", "second", "third")]
    ids = [submit(api, url)["id"] for url in images]
    first = list_page(api, page=1, page_size=2)
    second = list_page(api, page=2, page_size=2)
    beyond = list_page(api, page=3, page_size=2)
    assert (first["page"], first["total"], second["page"], second["total"]) == (1, 3, 2, 3)
    assert [i["id"] for i in first["items"] + second["items"]] == ids[::-1]
    assert beyond["items"] == [] and beyond["total"] == 3
    for item in first["items"] + second["items"]:
        assert {"id", "model", "outputs", "urls", "has_nsfw_contents", "status", "created_at"} <= (
            set(item)
        )
        assert {"error", "timings"} <= set(item) and item["urls"]["get"].endswith("/result")
        assert "image" not in item and "input" not in item
        assert not any(url in json_text(item) for url in images)
    assert emulator.stats()["list_requests"] == 3


def json_text(value: Any) -> str:
    import json

    return json.dumps(value)


def test_list_validates_its_body_as_documented(api):
    url = "/api/v3/predictions"
    cases = [
        (api.post(url, json={"page_size": 10}), 1400),
        (api.post(url, json={"page": 1}), 1400),
        (api.post(url, content=b"not json"), 1400),
        (api.post(url, json=[1]), 1400),
        (api.post(url, json={"page": 0, "page_size": 10}), 1401),
        (api.post(url, json={"page": 1, "page_size": 0}), 1401),
        (api.post(url, json={"page": 1, "page_size": 101}), 1401),
        (api.post(url, json={"page": 1, "page_size": "10"}), 1401),
        (api.post(url, json={"page": True, "page_size": 10}), 1401),
        (api.post(url, json={"page": 1, "page_size": 10, "status": "done"}), 1401),
        (api.post(url, json={"page": 1, "page_size": 10, "model": 7}), 1401),
        (api.post(url, json={"page": 1, "page_size": 10, "created_after": "yesterday"}), 1401),
        (api.post(url, json={"page": 1, "page_size": 10, "created_before": 1700000000}), 1401),
    ]
    for response, code in cases:
        assert response.status_code == 400, response.text
        assert response.json()["code"] == code and response.json()["message"]
    assert list_page(api, page_size=1)["items"] == []  # 1 and 100 are both allowed
    assert httpx.post(f"{api.base_url}{url}", json={"page": 1, "page_size": 1}).status_code == 401


def test_list_filters_by_model_status_and_inclusive_times(clocked):
    server, clock, api = clocked
    t0 = clock.now
    a = submit(api, "http://127.0.0.1:9/a.png")["id"]
    clock.advance(minutes=1)
    other = api.post("/api/v3/wavespeed-ai/hunyuan3d/v2.0", json={"image": "http://127.0.0.1:9/b"})
    b = other.json()["data"]["id"]
    clock.advance(minutes=1)
    c = submit(api, upload(api, png_bytes()))["id"]
    for pid in (a, b):
        wait_status(api, pid, "failed")
    wait_status(api, c, "completed")

    def ids(**body: Any) -> list[str]:
        return [i["id"] for i in list_page(api, **body)["items"]]

    at_b = (t0.replace(minute=1)).isoformat().replace("+00:00", "Z")
    assert ids(created_after=at_b) == [c, b]  # "at or after"
    assert ids(created_before=at_b) == [b, a]
    assert ids(created_after=at_b, created_before=at_b) == [b]
    assert ids(created_after=t0.replace(minute=1).isoformat()) == [c, b]  # +00:00 form too
    assert ids(model="wavespeed-ai/hunyuan3d/v2.0") == [b]
    assert ids(status="failed") == [b, a] and ids(status="completed") == [c]
    assert ids(status="processing") == []
    completed = list_page(api, status="completed")["items"][0]
    assert completed["outputs"] and isinstance(completed["executionTime"], int)


def test_retention_hides_old_predictions_everywhere(clocked):
    server, clock, api = clocked
    old = wait_status(api, submit(api, upload(api, png_bytes()))["id"], "completed")
    clock.advance(days=3)
    recent = submit(api, "http://127.0.0.1:9/recent.png")["id"]
    clock.advance(days=4, seconds=1)  # `old` is now 7 days and 1 s old
    assert [i["id"] for i in list_page(api)["items"]] == [recent]
    assert api.get(f"/api/v3/predictions/{old['id']}/result").status_code == 404
    assert httpx.get(old["outputs"][0]).status_code == 404  # an expired output no longer resolves
    server.configure(retention=3 * 86400)  # the setting a test can see: 3 days
    assert list_page(api)["items"] == []
    server.configure(retention=30 * 86400)
    assert len(list_page(api)["items"]) == 2  # hidden, not deleted: as long as we keep them


def test_balance_on_both_routes_decreases_per_completed_prediction(clocked):
    server, _, api = clocked
    assert api.get("/api/v3/balance").json()["data"] == {"balance": 10.0}
    account = api.get("/api/v3/account/balance").json()
    assert account["code"] == 200 and account["data"] == {"balance": 10.0, "currency": "USD"}
    done = submit(api, upload(api, png_bytes()))["id"]
    failed = submit(api, "http://127.0.0.1:9/missing.png")["id"]
    wait_status(api, done, "completed")
    wait_status(api, failed, "failed")
    assert api.get("/api/v3/balance").json()["data"]["balance"] == 9.5  # failed ones are free
    stats = server.stats()
    assert (stats["balance"], stats["spent"], stats["balance_requests"]) == (9.5, 0.5, 3)

    server.configure(balance_routes=["account/balance"], price=2.0)
    assert api.get("/api/v3/balance").status_code == 404
    assert api.get("/api/v3/account/balance").json()["data"]["balance"] == 9.5
    assert httpx.get(f"{server.base_url}/api/v3/account/balance").status_code == 401
    with pytest.raises(ValueError):
        server.configure(balance_routes=["wallet"])


# -- probability faults, read timeouts, dropped connections ------------------------------------
def result_codes(server: EmulatorServer, n: int = 40) -> list[int]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.base_url, headers=headers) as api:
        return [api.get("/api/v3/predictions/nope/result").status_code for _ in range(n)]


def test_probability_faults_are_seeded_so_a_run_repeats():
    rule = {"endpoint": "any", "kind": "500", "probability": 0.3, "count": -1}
    runs = []
    for seed in (11, 11, 12):
        with EmulatorServer(latency=0, seed=seed) as server:
            server.configure(rules=[rule])
            codes = result_codes(server)
            server.reset()
            server.configure(rules=[rule])
            assert result_codes(server) == codes  # reset re-seeds: the same run again
            runs.append(codes)
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert set(runs[0]) == {404, 500} and 0 < runs[0].count(500) < 40
    with EmulatorServer(latency=0) as server:
        for bad in (1.5, -0.1, "often", True):
            with pytest.raises(ValueError):
                server.configure(rules=[{"kind": "drop", "probability": bad}])


def test_drop_and_drop_after_accept_differ_in_what_the_list_shows(emulator, api):
    emulator.configure(rules=[{"endpoint": "submit", "kind": "drop"}])
    with pytest.raises(DROPPED):
        api.post(f"/api/v3/{MODEL}", json={"image": "http://127.0.0.1:9/never.png"})
    assert list_page(api)["total"] == 0  # never processed: nothing exists
    emulator.configure(rules=[{"endpoint": "submit", "kind": "drop_after_accept"}])
    with pytest.raises(DROPPED):
        api.post(f"/api/v3/{MODEL}", json={"image": "http://127.0.0.1:9/lost.png"})
    assert list_page(api)["total"] == 1  # processed, the answer lost: it exists (and may bill)


def test_slow_longer_than_the_read_timeout_is_a_read_timeout(emulator, api):
    emulator.configure(rules=[{"endpoint": "result", "kind": "slow", "delay": 1.0}])
    with pytest.raises(httpx.ReadTimeout):
        api.get("/api/v3/predictions/abc/result", timeout=httpx.Timeout(5.0, read=0.2))
    assert emulator.stats()["faults_injected"] == 1


# -- restart -------------------------------------------------------------------------------------
def test_restart_forgets_predictions_on_the_same_port_and_cuts_connections(emulator, api):
    media_url = upload(api, png_bytes())
    emulator.configure(hold=True)
    prediction = submit(api, media_url)
    wait_status(api, prediction["id"], "processing")
    emulator.configure(rules=[{"endpoint": "result", "kind": "slow", "delay": 30.0}])
    base = emulator.base_url
    in_flight: list[BaseException] = []

    def slow_poll() -> None:
        try:
            httpx.get(f"{base}/api/v3/predictions/{prediction['id']}/result", headers=api.headers)
        except httpx.HTTPError as exc:
            in_flight.append(exc)

    poller = threading.Thread(target=slow_poll)
    poller.start()
    wait_for(lambda: emulator.stats()["faults_injected"] == 1, what="the slow poll to arrive")
    emulator.restart()
    poller.join(timeout=10)
    assert not poller.is_alive() and len(in_flight) == 1  # cut, long before its 30 s
    assert isinstance(in_flight[0], DROPPED)

    assert emulator.base_url == base
    emulator.configure(hold=False)
    assert api.get(f"/api/v3/predictions/{prediction['id']}/result").status_code == 404
    assert list_page(api)["total"] == 0
    assert httpx.get(media_url).status_code == 200  # uploads live in object storage
    again = wait_status(api, submit(api, media_url)["id"], "completed")
    assert again["outputs"]
    stats = emulator.stats()
    assert stats["restarts"] == 1 and stats["submissions"] == 2  # counters span the restart
    assert stats["predictions"]["completed"] == 1  # what the server knows now


def test_official_sdk_works_unchanged_after_a_restart_and_its_tasks_are_listed(emulator, tmp_path):
    import wavespeed

    image = tmp_path / "kettle.png"
    image.write_bytes(png_bytes((160, 20, 60)))
    client = wavespeed.Client(
        api_key=KEY, base_url=emulator.base_url, max_connection_retries=3, retry_interval=0.05
    )
    image_url = client.upload(str(image))
    before = client.run(MODEL, {"image": image_url}, timeout=30, poll_interval=0.05)
    emulator.restart()
    after = client.run(MODEL, {"image": image_url}, timeout=30, poll_interval=0.05)
    assert len(before["outputs"]) == len(after["outputs"]) == 1
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=emulator.base_url, headers=headers) as api:
        listed = list_page(api, status="completed")["items"]
    assert [i["outputs"] for i in listed] == [after["outputs"]]  # the restart forgot `before`


# -- storage and output size ----------------------------------------------------------------------
def test_uploads_and_outputs_live_on_disk_until_stop():
    with EmulatorServer(latency=0.1) as emulator:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=emulator.base_url, headers=headers, timeout=10) as client:
            first, second = png_bytes((200, 40, 40)), png_bytes((40, 40, 200))
            ticket = client.post("/api/v3/media/uploads", json={"filename": "a.png"}).json()
            put = ticket["data"]["upload"]
            assert httpx.put(put["url"], content=first).status_code == 200
            # Uploading again replaces the bytes behind the same download URL.
            assert httpx.put(put["url"], content=second).status_code == 200
            media_url = ticket["data"]["download_url"]
            assert httpx.get(media_url).content == second
            ids = [submit(client, media_url)["id"] for _ in range(2)]
            done = [wait_status(client, i, "completed") for i in ids]
            glbs = [httpx.get(d["outputs"][0]).content for d in done]
        spool = emulator.spool_dir
        assert spool is not None
        assert [p.read_bytes() for p in (spool / "media").iterdir()] == [second]
        # The same picture twice: made once, stored once, served to both predictions.
        outputs = list((spool / "outputs").iterdir())
        assert len(outputs) == 1 and glbs == [outputs[0].read_bytes()] * 2
        assert glbs[0][:4] == b"glTF"
    assert not spool.exists()
    assert emulator.spool_dir is None


def test_output_profile_realistic_from_the_constructor():
    with EmulatorServer(latency=0.1, output_profile="realistic") as emulator:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=emulator.base_url, headers=headers, timeout=30) as client:
            prediction = submit(client, upload(client, png_bytes()))
            done = wait_status(client, prediction["id"], "completed")
            glb = httpx.get(done["outputs"][0], timeout=30).content
    assert len(glb) > 2 * 2**20
    assert b"image/jpeg" in glb[:4096] and b"metallicRoughnessTexture" in glb[:4096]


def test_output_profile_is_a_setting_like_the_faults(emulator, api):
    base = emulator.base_url
    assert httpx.get(f"{base}/_emulator/faults").json()["output_profile"] == "small"
    small = wait_status(api, submit(api, upload(api, png_bytes()))["id"], "completed")
    bad = httpx.post(f"{base}/_emulator/faults", json={"output_profile": "huge", "latency": 9})
    assert bad.status_code == 400 and "output_profile" in bad.json()["message"]
    assert httpx.get(f"{base}/_emulator/faults").json()["latency"] == 0.2  # nothing changed
    answer = httpx.post(f"{base}/_emulator/faults", json={"output_profile": "realistic"})
    assert answer.json()["output_profile"] == "realistic"
    big = wait_status(api, submit(api, upload(api, png_bytes()))["id"], "completed")
    sizes = [len(httpx.get(d["outputs"][0], timeout=30).content) for d in (small, big)]
    assert sizes[0] < 2**20 < 2 * 2**20 < sizes[1]
    emulator.reset()
    assert httpx.get(f"{base}/_emulator/faults").json()["output_profile"] == "small"
    with pytest.raises(ValueError, match="output_profile"):
        EmulatorServer(output_profile="medium")


def test_cli_rejects_an_unknown_output_profile(capsys):
    from hunyuan_assets.emulator.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--output-profile", "medium"])
    assert exited.value.code == 2
    assert "--output-profile" in capsys.readouterr().err


def test_stats_say_how_late_predictions_finished(emulator, api):
    assert emulator.stats()["late_ms"] == {"finished": 0, "p50": None, "p95": None, "max": None}
    wait_status(api, submit(api, upload(api, png_bytes()))["id"], "completed")
    late = emulator.stats()["late_ms"]
    assert late["finished"] == 1 and 0 <= late["p50"] == late["max"]


# -- faults the fault-injection suite relies on -------------------------------------------------
def test_truncate_sends_half_the_body_and_stats_count_faults_by_kind(emulator, api):
    done = wait_status(api, submit(api, upload(api, png_bytes()))["id"], "completed")
    emulator.configure(rules=[{"endpoint": "output", "kind": "truncate", "count": 1}])
    with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
        httpx.get(done["outputs"][0])
    whole = httpx.get(done["outputs"][0])  # the rule is spent
    assert whole.status_code == 200 and whole.content[:4] == b"glTF"
    emulator.configure(rules=[{"endpoint": "output", "kind": "truncate", "count": 1}])
    missing = httpx.get(done["outputs"][0].replace("/mesh.glb", "x/mesh.glb"))
    assert missing.status_code == 404 and b"NoSuchKey" in missing.content  # an error: whole
    with pytest.raises(httpx.RemoteProtocolError):  # ...and the rule still has its use
        httpx.get(done["outputs"][0])
    emulator.configure(rules=[{"endpoint": "result", "kind": "503", "count": 2}])
    assert api.get(f"/api/v3/predictions/{done['id']}/result").status_code == 503
    assert api.get(f"/api/v3/predictions/{done['id']}/result").status_code == 503
    stats = emulator.stats()
    assert stats["faults"] == {"output truncate": 2, "result 503": 2}
    assert stats["faults_injected"] == 4


def test_a_truncated_output_is_a_glb_cut_short_served_whole(emulator, api):
    emulator.configure(corrupt_output={"match": "cut", "error": "truncated"})
    cut = wait_status(api, submit(api, upload(api, png_bytes(), "cut.png"))["id"], "completed")
    whole = wait_status(api, submit(api, upload(api, png_bytes(), "ok.png"))["id"], "completed")
    assert emulator.stats()["faults"] == {"task corrupt_output:truncated": 1}
    short, full = httpx.get(cut["outputs"][0]), httpx.get(whole["outputs"][0])
    assert short.status_code == 200 and short.content[:4] == b"glTF"
    assert int(short.headers["content-length"]) == len(short.content) < len(full.content)
    declared = int.from_bytes(short.content[8:12], "little")  # the GLB header's total length
    assert declared == len(full.content) > len(short.content)


# -- serving ----------------------------------------------------------------------------------
def test_responses_are_sent_without_nagle_delay(monkeypatch, emulator, api):
    """Headers and body leave in two writes; with Nagle's algorithm the body waited ~40 ms
    for the client's delayed ACK on one request in four. Every accepted connection must
    have TCP_NODELAY set."""
    import socket

    from hunyuan_assets.emulator import server

    seen: list[int] = []
    setup = server._Handler.setup

    def recording_setup(self):
        setup(self)
        seen.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    monkeypatch.setattr(server._Handler, "setup", recording_setup)
    with httpx.Client(base_url=emulator.base_url, timeout=10) as fresh:  # new connections
        assert fresh.get("/_emulator/stats").status_code == 200
    submit(api, upload(api, png_bytes()))
    assert seen and all(seen), seen


def test_synthesis_in_worker_processes_makes_the_same_meshes_and_errors():
    """The standalone server's default: meshes made off the serving process's GIL. Same
    bytes as on threads for the same picture and seed; a bad input still fails clearly."""
    picture = png_bytes((30, 90, 200))
    glbs, errors = [], []
    for mode in ("threads", "processes"):
        with EmulatorServer(latency=0.05, seed=3, synthesis=mode) as emulator:
            pool = emulator._emulator._synthesis
            assert isinstance(pool, ProcessPoolExecutor) == (mode == "processes")
            headers = {"Authorization": f"Bearer {KEY}"}
            with httpx.Client(base_url=emulator.base_url, headers=headers, timeout=60) as client:
                done = wait_status(client, submit(client, upload(client, picture))["id"],
                                   "completed", "failed")  # fmt: skip
                glbs.append(httpx.get(done["outputs"][0]).content)
                text = upload(client, b"not a picture", "notes.txt")
                errors.append(wait_status(client, submit(client, text)["id"], "failed")["error"])
    assert glbs[0][:4] == b"glTF" and glbs[0] == glbs[1]
    assert all(e.startswith("input is not a decodable image") for e in errors), errors
    with pytest.raises(ValueError, match="synthesis"):
        EmulatorServer(synthesis="gpu")


def test_a_refused_setting_leaves_no_synthesis_worker_behind():
    import multiprocessing

    before = set(multiprocessing.active_children())
    with pytest.raises(ValueError, match="latency"):
        EmulatorServer(latency=-1, synthesis="processes")  # refused after the workers start
    assert set(multiprocessing.active_children()) <= before
