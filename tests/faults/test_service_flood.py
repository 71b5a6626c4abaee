"""A flood of random service names, in request and deploy events, cannot blow up /metrics:
the SLO series stay those of the catalogue, deploy series stay under their cap, and every
request of an unknown service is counted as such."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path

import pytest

from slipstream.bench.load import now_ms, preload, write_catalogue
from slipstream.client import SlipstreamProducer
from slipstream.settings import Settings
from slipstream.sinks.state import MAX_DEPLOY_SERIES
from slipstream.slo.events import request_from_record
from slipstream.streams.supervise import scrape, status_kib

from faultkit import (
    EVENTS_PER_S,
    Worker,
    drained,
    reckon,
    record,
    replay_records,
    wait_for,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVICES = 20
EVENTS = 20_000
RANDOM_NAMES = 10_000
DEPLOY_NAMES = 1_000


def _series(addr: str) -> int:
    return len(scrape(addr))


def test_random_service_names_stay_under_the_series_cap(settings: Settings, tmp_path: Path) -> None:
    rng = random.Random(9)
    catalogue = write_catalogue(tmp_path / "catalogue.yaml", SERVICES)
    settings = worker_settings(settings, catalogue)
    worker = Worker(settings, tmp_path / "worker.log")
    start = now_ms() - EVENTS * 1000 // EVENTS_PER_S
    preload(settings, "batched", EVENTS, SERVICES, 41,
            records=replay_records(EVENTS, SERVICES, 41, start))  # fmt: skip
    with worker.running():
        wait_for(drained(settings), 300, "the catalogue's traffic", worker)
        baseline = _series(worker.addr)
        rss_before = status_kib("VmRSS", worker.proc.pid if worker.proc else 0)
        stamp = now_ms()
        with SlipstreamProducer(settings.kafka_bootstrap, namespace=settings.namespace,
                                max_batch_events=500, register_atexit=False) as sdk:  # fmt: skip
            for i in range(RANDOM_NAMES):
                name = f"rogue-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
                sdk.record(request_from_record({
                    "event_id": f"flood-{i}", "service": name, "operation": "GET /",
                    "status_code": 500, "latency_ms": 5.0, "timestamp": stamp + i % 1000,
                    "version": "v1", "region": None, "callee": None,
                }))  # fmt: skip
            for i in range(DEPLOY_NAMES):
                sdk.announce_deploy(f"rogue-deploy-{i:05d}", "v2", timestamp_ms=stamp,
                                    deploy_id=f"flood-{i}")  # fmt: skip
        unknown = ("slipstream_unknown_service_events_total", ())
        wait_for(lambda: scrape(worker.addr).get(unknown, 0) >= RANDOM_NAMES, 120,
                 "every unknown service's request counted", worker)  # fmt: skip
        wait_for(drained(settings), 120, "the flood to be committed", worker)
        time.sleep(1.0)  # a scrape after the last batch's sinks were written
        after = _series(worker.addr)
        samples = scrape(worker.addr)
        rss_after = status_kib("VmRSS", worker.proc.pid if worker.proc else 0)
        assert worker.alive()
    rogue = sum(1 for (_, labels) in samples if any(v.startswith("rogue") for _, v in labels))
    result = reckon(settings)
    record(
        "10 000 random service names",
        random_request_services=RANDOM_NAMES,
        random_deploy_services=DEPLOY_NAMES,
        series_before=baseline,
        series_after=after,
        series_cap=baseline + 2 * MAX_DEPLOY_SERIES,
        series_naming_a_random_service=rogue,
        unknown_service_events=samples.get(unknown, 0),
        worker_rss_kib_before=rss_before,
        worker_rss_kib_after=rss_after,
        events_lost=result.comparison.lost,
    )
    assert samples.get(unknown) == RANDOM_NAMES
    # Deploy markers of unknown services are capped with the rest; no SLO series appears.
    assert after <= baseline + 2 * MAX_DEPLOY_SERIES, (baseline, after)
    assert rogue <= MAX_DEPLOY_SERIES
    assert result.comparison.exact, result.comparison
