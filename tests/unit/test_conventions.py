from __future__ import annotations

from slipstream import conventions as c


def test_namespace_prefixes_topics_group_and_keys() -> None:
    assert c.topic_name("", "slo.requests") == "slo.requests"
    assert c.topic_name("ns", "slo.requests") == "ns.slo.requests"
    assert c.dlq_topic_name("ns", "slo.requests") == "ns.slo.requests.dlq"
    assert c.consumer_group("") == "slipstream"
    assert c.consumer_group("ns") == "ns.slipstream"
    assert c.redis_budget_key("", "checkout", "latency") == "slipstream:budget:checkout:latency"
    assert (
        c.redis_budget_key("ns", "checkout", "latency") == "slipstream:ns:budget:checkout:latency"
    )


def test_every_topic_of_a_namespace_carries_its_prefix() -> None:
    names = c.all_topic_names("ns")
    assert len(names) == len(set(names)) == 8
    assert all(n.startswith("ns.slo.") for n in names)
    assert "ns.slo.deploy-impact" in names and "ns.slo.deploys.dlq" in names
