"""Catalogues imported from the example OpenSLO and Sloth specs run in the worker: the
SLOs it serves have the specs' objectives and windows, under Sloth's metric names too."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from slipstream.client.producer import producer_from_settings
from slipstream.settings import Settings
from slipstream.stack.process import free_port
from slipstream.streams.cli import main
from slipstream.streams.supervise import scrape, worker_process

from helpers import poll

SPECS = Path(__file__).resolve().parents[1] / "fixtures" / "specs"
# (format, service, {slo: (objective ratio, period days)}) as the example specs say.
EXPECTED = {
    "openslo": ("payments", {"payments-availability": (0.999, 28), "payments-latency": (0.99, 7)}),
    "sloth": ("checkout", {"requests-availability": (0.999, 30), "requests-latency": (0.99, 30),
                           "raw-availability": (0.995, 30)}),
}  # fmt: skip


@pytest.mark.parametrize("spec_format", sorted(EXPECTED))
def test_an_imported_catalogue_runs_in_the_worker(
    settings: Settings, tmp_path: Path, spec_format: str
) -> None:
    service, slos = EXPECTED[spec_format]
    catalogue = tmp_path / "catalogue.yaml"
    spec = SPECS / f"{spec_format}.yml"
    assert main(["import", spec_format, str(spec), "--out", str(catalogue)]) == 0
    addr = f"127.0.0.1:{free_port()}"
    settings = settings.replace(catalogue=str(catalogue), metrics_addr=addr)
    with worker_process(settings, tmp_path / "worker.log") as proc:
        poll(lambda: scrape(addr), bool, timeout_s=60, what="the worker's /metrics")
        with producer_from_settings(settings, register_atexit=False) as sdk:
            now = int(time.time() * 1000)
            for i in range(200):
                sdk.record_request(service, "GET /x", 500 if i % 50 == 0 else 200, 120.0,
                                   timestamp_ms=now - 60_000 + i * 100)  # fmt: skip

        def served() -> dict[str, tuple[float, float]]:
            samples = scrape(addr)
            out = {}
            for (name, labels), value in samples.items():
                lab = dict(labels)
                if name == "slipstream_slo_objective_ratio" and lab["service"] == service:
                    days = samples.get(("slipstream_slo_period_days", labels), 0.0)
                    out[lab["slo"]] = (round(value, 6), days)
            return out

        try:
            got = poll(served, lambda s: set(s) == set(slos), timeout_s=90, what="every SLO")
        finally:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        assert got == {name: (ratio, float(days)) for name, (ratio, days) in slos.items()}
        sloth_days = {
            dict(labels)["sloth_slo"]: value
            for (name, labels), value in scrape(addr).items()
            if name == "slo:time_period:days"
        }
        assert sloth_days == {name: float(days) for name, (_, days) in slos.items()}
