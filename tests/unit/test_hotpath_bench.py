"""``slipstream bench hotpath`` runs every stage both ways on a small workload (no timing
is asserted: these machines are shared)."""

from __future__ import annotations

from slipstream.bench import hotpath


def test_every_stage_runs_and_both_paths_count_the_same() -> None:
    w = hotpath.workload(3_000, services=5)
    assert len(w.messages) > 10
    runs = hotpath.run(w, repeats=1)
    paths = [
        f"{stage} [{path}]" for stage in ("ingest", "engine", "worker") for path in hotpath.PATHS
    ]
    assert set(runs) == {"decode", *paths}
    assert all(len(v) == 1 and v[0] > 0 for v in runs.values())
    tables = []
    for path in hotpath.PATHS:
        worker = hotpath._Worker(w, path)
        for m in w.messages:
            engine = worker.absorb(m, w.now_ms)
            if engine is not None:
                worker.close(engine)
        tables.append(worker.table)
    assert tables[0] == tables[1] and tables[0]
