"""`slipstream bench` (perf) in miniature against the session's broker: every figure is there."""

from __future__ import annotations

from slipstream.bench.perf import B3C, report, run_perf
from slipstream.settings import Settings
from slipstream.stack.process import free_port


def test_a_small_perf_bench_measures_every_rung_latency_and_memory(settings: Settings) -> None:
    result = run_perf(settings, events=100_000, repeats=1, services=5, latency_samples=1,
                      memory_sizes=(100,), metrics_port=free_port(),
                      recovery_records=20_000)  # fmt: skip
    for shape in ("single", "batched"):
        steps = result["shapes"][shape]["steps"]
        assert set(steps) == {"B0", "B1", "B1 kafka-python", "B2", "B3", B3C,
                              "F (faust, empty agent)", "P"}  # fmt: skip
        assert all(s["median"] > 0 for s in steps.values()), steps
        assert result["shapes"][shape]["P_over_B3"] > 0
        assert result["shapes"][shape]["P_over_B3c"] > 0
    for level in ("0%", "50%", "90%"):
        measured = result["latency"][level]
        assert measured["n"] == 1 and measured["missed"] == 0, measured
        assert 0 < measured["p50"] < 30
    assert result["latency"]["90%"]["background_events_per_s"] > 0
    (memory,) = result["memory"]
    assert memory["slos"] == 100 and memory["kib_per_slo"] > 0
    whole = result["worker_memory"]
    assert whole["slos"] == 100 and whole["entries"] >= 100 * 1_700  # every SLO's buckets
    assert whole["rss_mib"] > whole["bare_rss_mib"] > 0
    recovery = result["recovery"]
    assert recovery["records"] >= 20_000 and recovery["slos"] >= 2
    assert recovery["restart_to_first_event_s"] > 0 and recovery["b1_read_s"] > 0
    assert recovery["worker_rss_mib"] > 0
    # The restart resumed from checkpoints; the cold one read the whole changelog.
    assert recovery["checkpoint_entries"] > 0 and recovery["cold_restart_s"] > 0
    assert recovery["cold_restored_entries"] >= recovery["records"]
    text = report(result)
    for heading in (
        "## Throughput",
        "## Alert latency",
        "## Memory per SLO",
        "## A whole worker",
        "## Recovery",
        "P / B3",
        "the targets are judged on a full run",  # 100 k events: the short run's caveat
    ):
        assert heading in text
