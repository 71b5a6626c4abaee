"""The correlation benchmark harness: ground truth, determinism and baselines, on a short run.

(The issue's quality floors are measured by `slipstream bench correlation`, not asserted
here: see the README for the latest figures.)
"""

from __future__ import annotations

from slipstream.bench.correlation import events, make_world, run_seed
from slipstream.slo.events import Deploy


def test_the_world_is_seeded_and_labelled() -> None:
    a, b = make_world(7, 6), make_world(7, 6)
    assert [d.deploy_id for d in a.deploys] == [d.deploy_id for d in b.deploys]
    assert all(d.ratio == 1.0 for d in a.deploys if not d.bad)
    assert all(d.ratio >= 1.5 for d in a.deploys if d.bad)
    assert a.incidents and all(len(i.services) >= 2 for i in a.incidents)
    stream = list(events(a, 7))
    times = [e.timestamp_ms for e in stream]
    assert times == sorted(times)
    assert {e.deploy_id for e in stream if isinstance(e, Deploy)} == {
        d.deploy_id for d in a.deploys
    }


def test_a_short_run_scores_slipstream_and_every_baseline_deterministically() -> None:
    first = run_seed(3, 2)
    assert first == run_seed(3, 2)
    assert set(first["baselines"]) == {
        "last deploy before the alert",
        "fixed threshold (2x, Argo/Flagger style)",
        "repeated two-proportion z-test",
    }
    for scores in [first["slipstream"], *first["baselines"].values()]:
        assert 0.0 <= scores["precision"] <= 1.0 and 0.0 <= scores["recall"] <= 1.0
