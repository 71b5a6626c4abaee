"""Failures that name the called service they failed on (the request's ``callee``): the
deploy correlation judges a change on its service's own failures, through the engine."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

from slipstream.bench.world import binomial
from slipstream.slo.catalogue import Catalogue, parse_catalogue
from slipstream.slo.deploys import DeployTracker, TrackedDeploy
from slipstream.slo.engine import PartitionEngine
from slipstream.slo.events import Deploy
from slipstream.slo.windows import FINE_MS, MEDIUM_MS, OwnCounts, WindowCounts

T0 = 1_795_000_000_000 // 3_600_000 * 3_600_000
HOUR = 3_600_000
SLO = {"name": "avail", "objective": 99.0, "period": "7d", "sli": {"kind": "availability"},
       "alerting": {"min_events": 50}}  # fmt: skip
CATALOGUE = parse_catalogue({"services": {
    "api": {"depends_on": ["db"], "slos": [SLO]},
    "db": {"slos": [SLO]},
    **{f"c{i}": {"slos": [SLO]} for i in range(6)},
}}, "callee-test")  # fmt: skip
BASE = 0.002  # every service's own failure rate
PER_TICK = 200  # requests per 10 s tick (20 rps) of each service but db
DB_PER_TICK = 1  # db is quiet: its own counts cannot rule out that it failed api's calls
CALLS = 0.5  # of a caller's requests, those that call its callee


def config_change(deploy_id: str, service: str, ts: int) -> list[Deploy]:
    return [Deploy(deploy_id, service, "v2", "v1", "config", phase, 1.0, ts, "ci")
            for phase in ("started", "finished")]  # fmt: skip


# A service's events in one tick: (service, tick start, rng) -> total, bad, of them those
# that failed on a callee.
Traffic = Callable[[str, int, random.Random], tuple[int, int, int]]


def verdicts_on(
    deploy_id: str,
    catalogue: Catalogue,
    changes: list[Deploy],
    end_ms: int,
    traffic: Traffic,
    names_callee: bool,
    seed: int,
) -> set[str]:
    """Run the catalogue's services from T0 to ``end_ms`` tick by tick; the verdicts
    published on ``deploy_id``. Unless ``names_callee``, failures on a callee are counted
    as the service's own (it does not say where they came from)."""
    engine = PartitionEngine(0, catalogue)
    rng = random.Random(seed)
    seen: set[str] = set()
    for offset, ts in enumerate(range(T0, end_ms, FINE_MS)):
        engine.begin(offset)
        for deploy in changes:
            if deploy.timestamp_ms == ts:
                engine.absorb_deploy(deploy)
        for service in catalogue.services:
            total, bad, via = traffic(service, ts, rng)
            engine.absorb_tally(service, "avail", None, ts + 5_000, bad, total,
                                via if names_callee else 0)  # fmt: skip
        result = engine.end()
        seen |= {i.verdict.verdict for i in result.impacts if i.deploy.deploy_id == deploy_id}
    return seen


def api_verdicts(
    names_callee: bool,
    api_harm: float,
    db_harm: float = 1.0,
    calls: float = CALLS,
    catalogue: Catalogue = CATALOGUE,
) -> set[str]:
    """db changes at two hours, api a minute later: api's requests that call db (``calls``
    of them) fail as db does (``db_harm`` times more often after its change), and its own
    failures rise ``api_harm`` times. ``names_callee``: api's events name db when they
    failed on it. The verdicts published on api's change."""
    db_start = T0 + 2 * HOUR
    api_start = db_start + 60_000

    def traffic(service: str, ts: int, rng: random.Random) -> tuple[int, int, int]:
        db_rate = BASE * (db_harm if ts >= db_start else 1.0)
        if service == "db":
            return DB_PER_TICK, binomial(rng, DB_PER_TICK, db_rate), 0
        if service != "api":
            return PER_TICK, binomial(rng, PER_TICK, BASE), 0
        via = binomial(rng, PER_TICK, calls * db_rate)
        own = binomial(rng, PER_TICK, BASE * (api_harm if ts >= api_start else 1.0))
        return PER_TICK, own + via, via

    changes = [*config_change("db-v2", "db", db_start), *config_change("api-v2", "api", api_start)]
    return verdicts_on("api-v2", catalogue, changes, api_start + HOUR, traffic, names_callee, 3)


def test_a_change_that_raised_its_own_failures_is_attributed_though_a_callee_changed() -> None:
    assert "ATTRIBUTED" in api_verdicts(names_callee=True, api_harm=6.0)
    # Unnamed, api's failures may be db's: a change of db, too quiet to tell, may explain them.
    assert "ATTRIBUTED" not in api_verdicts(names_callee=False, api_harm=6.0)


def test_failures_named_on_a_callee_do_not_blame_the_callers_change() -> None:
    assert "ATTRIBUTED" not in api_verdicts(names_callee=True, api_harm=1.0, db_harm=20.0)


def declaring(catalogue: Catalogue, names_callees: bool, *services: str) -> Catalogue:
    """``catalogue`` with ``services`` declaring whether they name their callees."""
    specs = {name: replace(spec, names_callees=names_callees) if name in services else spec
             for name, spec in catalogue.services.items()}  # fmt: skip
    return replace(catalogue, services=specs)


def test_a_declared_service_is_taken_to_name_its_callees_before_it_has_named_one() -> None:
    # api's calls to db never fail, so none of its failures has named db yet: undeclared,
    # it is not known to name them, and db's change, too quiet to tell, may explain its rise.
    assert "ATTRIBUTED" not in api_verdicts(names_callee=True, api_harm=6.0, calls=0.0)
    declared = declaring(CATALOGUE, True, "api")
    assert "ATTRIBUTED" in api_verdicts(names_callee=True, api_harm=6.0, calls=0.0,
                                        catalogue=declared)  # fmt: skip


CHAIN = parse_catalogue({"services": {
    "api": {"depends_on": ["db"], "slos": [SLO]},
    "db": {"depends_on": ["store"], "slos": [SLO]},
    "store": {"slos": [SLO]},
    **{f"c{i}": {"slos": [SLO]} for i in range(6)},
}}, "chain-test")  # fmt: skip


def chain_verdicts(db_own_harm: float) -> set[str]:
    """api calls db, which calls store; each names the callee a request failed on. store's
    change at two hours makes it fail 20x, and db's calls to it with it; api's change a
    minute later makes its own failures rise 6x; db's own failures rise ``db_own_harm``
    times from then on. The verdicts published on api's change."""
    store_start = T0 + 2 * HOUR
    api_start = store_start + 60_000

    def traffic(service: str, ts: int, rng: random.Random) -> tuple[int, int, int]:
        store_rate = BASE * (20.0 if ts >= store_start else 1.0)
        db_own_rate = BASE * (db_own_harm if ts >= api_start else 1.0)
        if service == "db":
            via = binomial(rng, PER_TICK, CALLS * store_rate)
            return PER_TICK, binomial(rng, PER_TICK, db_own_rate) + via, via
        if service == "api":
            via = binomial(rng, PER_TICK, CALLS * (db_own_rate + CALLS * store_rate))
            own = binomial(rng, PER_TICK, BASE * (6.0 if ts >= api_start else 1.0))
            return PER_TICK, own + via, via
        rate = store_rate if service == "store" else BASE
        return PER_TICK, binomial(rng, PER_TICK, rate), 0

    changes = [*config_change("store-v2", "store", store_start),
               *config_change("api-v2", "api", api_start)]  # fmt: skip
    return verdicts_on("api-v2", CHAIN, changes, api_start + HOUR, traffic, True, 6)


def test_a_callee_failing_on_its_own_callee_shares_no_cause_with_a_caller_naming_it() -> None:
    # db's failures rose 11x with store's change, every one of them named on store: its own
    # did not move. api's own failures are no longer db's (api names them), and what made db
    # fail is not what made api fail: api's change is blamed.
    assert "ATTRIBUTED" in chain_verdicts(db_own_harm=1.0)
    # db's own failures rising with api's: a cause both share may explain api's.
    assert "ATTRIBUTED" not in chain_verdicts(db_own_harm=11.0)


def test_own_counts_leave_out_what_named_a_callee() -> None:
    windows = WindowCounts([HOUR])
    windows.add(FINE_MS, 0, 5, 100, 1, via=3)
    windows.add(FINE_MS, 1, 2, 100, 2)
    assert not windows.names_callees()  # ... until a 5 min bucket counts one (as the engine)
    assert windows.fine_range(0, 2 * FINE_MS) == (7, 200)
    assert OwnCounts(windows).fine_range(0, 2 * FINE_MS) == (4, 200)
    assert OwnCounts(windows).fine_range(FINE_MS, 2 * FINE_MS) == (2, 100)
    windows.add(MEDIUM_MS, 0, 7, 200, 2, via=3)
    assert windows.names_callees()
    assert OwnCounts(windows).range(MEDIUM_MS, 0, MEDIUM_MS) == (4, 200)


CALLERS = parse_catalogue({"services": {
    "api": {"slos": [SLO]},
    **{f"web{i}": {"depends_on": ["api"], "slos": [SLO]} for i in range(6)},
}}, "callers-test")  # fmt: skip


def incident_verdicts(names_callee: bool, catalogue: Catalogue = CALLERS) -> set[str]:
    """api changes (harmlessly) at two hours; eight minutes later an incident makes api and
    the six services that call it, its only neighbours, fail ten times more often for an
    hour. The callers' calls to api fail as api does. The verdicts on api's change."""
    start = T0 + 2 * HOUR
    incident = range(start + 8 * 60_000, start + 68 * 60_000)

    def traffic(service: str, ts: int, rng: random.Random) -> tuple[int, int, int]:
        rate = BASE * (10.0 if ts in incident else 1.0)
        via = 0 if service == "api" else binomial(rng, PER_TICK, CALLS * rate)
        return PER_TICK, binomial(rng, PER_TICK, rate) + via, via

    changes = config_change("api-v2", "api", start)
    return verdicts_on("api-v2", catalogue, changes, start + 90 * 60_000, traffic, names_callee,
                       4)  # fmt: skip


def test_callers_that_name_their_callees_are_controls_for_them() -> None:
    # Their own failures rose with api's: an incident, not api's change.
    assert "ATTRIBUTED" not in incident_verdicts(names_callee=True)
    # Unnamed, api's failures are theirs too: they cannot be its controls, and with none
    # api's change takes the blame (the case naming callees mends).
    assert "ATTRIBUTED" in incident_verdicts(names_callee=False)


def test_callers_declared_not_to_name_their_callees_are_not_controls() -> None:
    # They name some (a client library that names timeouts only, say): not enough to take
    # their failures for their own, so they cannot be api's controls, named or not.
    callers = [name for name in CALLERS.services if name != "api"]
    declared = declaring(CALLERS, False, *callers)
    assert "ATTRIBUTED" in incident_verdicts(names_callee=True, catalogue=declared)


PEERS = parse_catalogue({"services": {
    "api": {"slos": [SLO]},
    "peer": {"slos": [SLO]},
    **{f"calm{i}": {"slos": [SLO]} for i in range(6)},
}}, "peers-test")  # fmt: skip


def peer_incident_verdicts(peer_changed_min: int) -> set[str]:
    """peer ships a change that triples its failure rate ``peer_changed_min`` minutes
    before api's harmless change at three hours; eight minutes after that an incident makes
    both (and no other service) fail ten times more often for an hour. The verdicts on
    api's change."""
    start = T0 + 3 * HOUR
    peer_changed = start - peer_changed_min * 60_000
    incident = range(start + 8 * 60_000, start + 68 * 60_000)

    def traffic(service: str, ts: int, rng: random.Random) -> tuple[int, int, int]:
        rate = BASE * (10.0 if service in ("api", "peer") and ts in incident else 1.0)
        rate *= 3.0 if service == "peer" and ts >= peer_changed else 1.0
        return PER_TICK, binomial(rng, PER_TICK, rate), 0

    changes = [*config_change("api-v2", "api", start),
               *config_change("peer-v2", "peer", peer_changed)]  # fmt: skip
    return verdicts_on("api-v2", PEERS, changes, start + 90 * 60_000, traffic, False, 5)


def test_a_service_changed_before_the_hour_before_is_a_control_again() -> None:
    # peer's change is blamed (its rate tripled) and stays under suspicion for two hours.
    # Changed 90 minutes before api, the hour "before" saw it at its new rate: the
    # incident's rise beyond that shows on it, and api's change is not blamed.
    assert "ATTRIBUTED" not in peer_incident_verdicts(peer_changed_min=90)
    # Changed half an hour before, its own change moved the numbers api's are compared
    # with: it is no control, the calm ones say the rise is api's alone, and it is blamed.
    assert "ATTRIBUTED" in peer_incident_verdicts(peer_changed_min=30)


def test_the_split_tells_the_old_versions_failures_on_a_callee_apart() -> None:
    # While both versions serve, the old one's failures that named a called service are
    # kept apart: a before/after that follows the split reads its own failures only.
    engine = PartitionEngine(0, CATALOGUE)
    start = T0 + 2 * HOUR
    engine.begin(0)
    engine.absorb_deploy(Deploy("api-v2", "api", "v2", "v1", "code", "started", 0.5, start, "ci"))
    engine.absorb_tally("api", "avail", "v1", start + 5_000, 3, 100, 2)
    engine.absorb_tally("api", "avail", "v2", start + 5_000, 1, 100, 0)
    engine.absorb_tally("api", "avail", "v1", start + FINE_MS + 5_000, 0, 100, 0)  # next tick
    engine.end()
    test = engine.deploys.deploys["api-v2"].tests["avail"]
    assert (test.bad_old, test.own_old, test.bad_new) == (3, (1, 100), 1)


def test_a_split_tick_restored_from_state_written_before_it_counted_callees_goes_on() -> None:
    # A tick held in state written before the named failures were counted has four entries.
    tracker = DeployTracker()
    start = T0 + 2 * HOUR
    tracker.on_deploy(Deploy("api-v2", "api", "v2", "v1", "code", "started", 0.5, start, "ci"))
    state = tracker.deploys["api-v2"].to_dict()
    state["ticks"] = {"avail": [1, 100, 2, 100]}
    tracker.deploys["api-v2"] = TrackedDeploy.from_dict(state)
    tracker.count("api", "v1", start + 5_000, "avail", 3, 100, via=1)
    assert tracker.deploys["api-v2"].ticks["avail"] == [1, 100, 5, 200, 1]
    tracker.evaluate("api", "avail", start + FINE_MS, 10**7, 0.001)
    assert tracker.deploys["api-v2"].tests["avail"].own_old == (4, 200)
