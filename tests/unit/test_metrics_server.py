"""The /metrics endpoint: every series by default, only the named ones on request."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from slipstream.sinks.metrics_server import serve
from slipstream.streams.supervise import scrape


class ManySeries(Collector):
    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily("slo:objective:ratio", "per SLO", labels=["slo"])]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("slo:objective:ratio", "per SLO", labels=["slo"])
        for i in range(3):
            family.add_metric([f"s{i}"], 0.999)
        yield family


def test_name_filter_returns_only_the_named_series() -> None:
    registry = CollectorRegistry()
    counter = Counter("slipstream_input_messages", "in", ["topic"], registry=registry)
    counter.labels("slo.requests").inc(7)
    registry.register(ManySeries())
    server = serve("127.0.0.1", 0, registry)
    try:
        addr = f"127.0.0.1:{server.server_address[1]}"
        everything = scrape(addr)
        only = scrape(addr, names=("slipstream_input_messages_total",))
    finally:
        server.shutdown()
    assert ("slo:objective:ratio", (("slo", "s0"),)) in everything
    assert only == {("slipstream_input_messages_total", (("topic", "slo.requests"),)): 7.0}
