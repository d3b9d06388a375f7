"""Latency and throughput of the CDS Hooks ``patient-view`` service on loopback.

    python benchmarks/bench_cds.py [--cold 20] [--cached 60] [--load 120] [--concurrency 4]

The payload is the demo's E+T+I synthetic patient grown to about 2,000 Observations
(copies spread over the 48 h window), 2 notes and 1 chest X-ray (DICOM attachment).
*Cold* requests change the note text and the image bytes each time, so no note/image
embedding can be reused; *cached* requests repeat one payload. Then a bounded client
sends ``--load`` requests with ``--concurrency`` in flight (and at most ``--max-seconds``)
and reports requests/s. Everything runs on 127.0.0.1 with authentication off.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cds_hooks.conftest import DEMO_PATIENTS  # noqa: E402
from tests.conftest import free_port  # noqa: E402


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def build_payload(n_obs: int = 2000) -> dict[str, Any]:
    """The E+T+I demo patient with ~``n_obs`` Observations, 2 notes and 1 X-ray."""
    import orjson

    patients = orjson.loads(DEMO_PATIENTS.read_bytes())
    p = next(x for x in patients if x["pattern"] == "E+T+I")
    pre = copy.deepcopy(p["prefetch"])
    obs = [e["resource"] for e in pre["observations"]["entry"]]
    start = _time(pre["encounter"]["entry"][0]["resource"]["period"]["start"])
    grown: list[dict[str, Any]] = []
    i = 0
    while len(grown) < n_obs:
        o = copy.deepcopy(obs[i % len(obs)])
        o["id"] = f"{o['id']}-b{i}"
        when = start + timedelta(minutes=(i * 1.37) % (47 * 60))
        o["effectiveDateTime"] = when.isoformat().replace("+00:00", "Z")
        grown.append(o)
        i += 1
    pre["observations"]["entry"] = [{"resource": o} for o in grown]
    docs = [e["resource"] for e in pre["documents"]["entry"]]
    texts = [d for d in docs if d["content"][0]["attachment"]["contentType"].startswith("text/")]
    dicoms = [
        d for d in docs if d["content"][0]["attachment"]["contentType"] == "application/dicom"
    ]
    pre["documents"]["entry"] = [{"resource": d} for d in texts[:2] + dicoms[:1]]
    return {
        "hook": "patient-view",
        "hookInstance": "bench",
        "context": {"patientId": p["patientId"], "encounterId": p["encounterId"]},
        "prefetch": pre,
    }


def _new_instance(dicom: bytes, k: int) -> bytes:
    import io

    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(io.BytesIO(dicom))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageComments = f"benchmark copy {k}"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def make_cold(payload: dict[str, Any], k: int) -> dict[str, Any]:
    """A variant whose note text and image bytes are new (no cached embedding applies)."""
    body = copy.deepcopy(payload)
    body["hookInstance"] = f"bench-cold-{k}"
    for entry in body["prefetch"]["documents"]["entry"]:
        att = entry["resource"]["content"][0]["attachment"]
        raw = bytearray(base64.b64decode(att["data"]))
        if att["contentType"].startswith("text/"):
            raw += f"\nFollow-up remark {k}.".encode()
        else:  # same pixels in a new instance: new bytes, new content key
            raw = bytearray(_new_instance(bytes(raw), k))
        att["data"] = base64.b64encode(bytes(raw)).decode()
    return body


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    idx = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[idx]


def report(name: str, ms: list[float]) -> None:
    print(
        f"{name:<22} n={len(ms):<4} p50={pct(ms, 50):7.1f} ms  p95={pct(ms, 95):7.1f} ms  "
        f"p99={pct(ms, 99):7.1f} ms  mean={statistics.fmean(ms):7.1f} ms"
    )


async def load(url: str, body: bytes, total: int, concurrency: int, max_s: float) -> None:
    sem = asyncio.Semaphore(concurrency)
    done = 0
    errors = 0
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as client:

        async def one() -> None:
            nonlocal done, errors
            if time.perf_counter() - t0 > max_s:
                return
            async with sem:
                r = await client.post(
                    url, content=body, headers={"content-type": "application/json"}
                )
                done += 1
                errors += r.status_code != 200

        await asyncio.gather(*(one() for _ in range(total)))
    dt = time.perf_counter() - t0
    print(
        f"load: {done} requests, concurrency {concurrency}, {dt:.1f} s -> "
        f"{done / dt:.1f} requests/s ({errors} errors)"
    )


@contextlib.contextmanager
def server_process(tmp: str, device: str, threads: int) -> Iterator[str]:
    """``uvicorn`` serving the app in its own process (no GIL shared with the client)."""
    port = free_port()
    env = {
        **os.environ,
        "MOE_HEALTH_MODEL_DEVICE": device,
        "MOE_HEALTH_DATA_DIR": tmp,
        "MOE_HEALTH_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
        "MOE_HEALTH_AUTH_DISABLED": "true",
        "MOE_HEALTH_LOG_LEVEL": "WARNING",
        "MOE_HEALTH_TORCH_THREADS": str(threads),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "cds_hooks.main:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cold", type=int, default=20)
    ap.add_argument("--cached", type=int, default=60)
    ap.add_argument("--load", type=int, default=120)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="server torch threads (0 = default)")
    args = ap.parse_args()

    import orjson

    payload = build_payload()
    size = len(orjson.dumps(payload))
    n_obs = len(payload["prefetch"]["observations"]["entry"])
    print(f"payload: {n_obs} Observations, 2 notes, 1 chest X-ray; {size / 1e6:.2f} MB JSON")
    load1 = os.getloadavg()[0]
    print(
        f"host: {os.cpu_count()} CPUs (load average {load1:.1f} at start), server torch "
        f"threads {args.threads or 'default'}, device {args.device}"
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        server_process(tmp, args.device, args.threads) as base,
        httpx.Client(timeout=60) as client,
    ):
        url = f"{base}/cds-services/patient-view"
        warm = client.post(url, json=payload)  # model warm-up, not measured
        assert warm.status_code == 200, warm.text
        cold: list[float] = []
        for k in range(args.cold):
            body = orjson.dumps(make_cold(payload, k))
            t0 = time.perf_counter()
            r = client.post(url, content=body, headers={"content-type": "application/json"})
            cold.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
        body = orjson.dumps(payload)
        cached: list[float] = []
        for _ in range(args.cached):
            t0 = time.perf_counter()
            r = client.post(url, content=body, headers={"content-type": "application/json"})
            cached.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
        report("patient-view cold", cold)
        report("patient-view cached", cached)
        asyncio.run(load(url, body, args.load, args.concurrency, args.max_seconds))


if __name__ == "__main__":
    main()
