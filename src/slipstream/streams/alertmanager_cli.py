"""`slipstream alertmanager`: forward alert transitions from slo.alerts to Alertmanager.

Off unless run: a process of its own, in its own consumer group, so it can be scaled,
restarted or left out independently of the workers. Records are posted, then their
offsets committed (at least once). At start it re-reads the topic up to its group's
committed offsets to learn which alerts are still open, and posts those again.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from slipstream import conventions
from slipstream.catalogue_file import load_catalogue
from slipstream.connect import explained_kafka_access, kafka_options
from slipstream.schemas.codec import AvroCodec, CodecError
from slipstream.settings import Settings
from slipstream.sinks.alertmanager import RESEND_S, AlertBook, AlertmanagerClient
from slipstream.streams.topics import ensure_topics

GROUP_SUFFIX = "alertmanager"


def add_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    verbs.add_parser("alertmanager", parents=[common],
                     help="forward slo.alerts to Alertmanager (--alertmanager-url)")  # fmt: skip


def _records(codec: AvroCodec, batch: Any) -> Iterator[dict[str, Any]]:
    for rec in batch:
        try:
            yield codec.decode(rec.value, {"BurnRateAlert"}).record
        except CodecError:
            continue  # not an alert record: nothing to forward


class AlertForwarder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = conventions.topic_name(settings.namespace, conventions.ALERTS_TOPIC)
        self.group = conventions.topic_name(settings.namespace, f"slipstream-{GROUP_SUFFIX}")
        self.book = AlertBook(load_catalogue(settings.catalogue or None), settings.namespace)
        self.client = AlertmanagerClient(settings.alertmanager_url)
        self.codec = AvroCodec()
        self.stopping = False
        self.forwarded = 0

    def stop(self, *_: object) -> None:
        self.stopping = True

    def _consumer(self) -> KafkaConsumer:
        with explained_kafka_access(self.settings):
            ensure_topics(self.settings)
            return KafkaConsumer(**kafka_options(self.settings), group_id=self.group,
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 client_id="slipstream-alertmanager")  # fmt: skip

    def _catch_up(self, consumer: KafkaConsumer) -> None:
        """Learn the open alerts from what this group has already forwarded."""
        tps = [TopicPartition(self.topic, p)
               for p in sorted(consumer.partitions_for_topic(self.topic) or ())]  # fmt: skip
        committed = {tp: consumer.committed(tp) or 0 for tp in tps}
        wanted = [tp for tp in tps if committed[tp] > 0]
        if not wanted:
            return  # a first start: nothing forwarded yet
        reader = KafkaConsumer(**kafka_options(self.settings), enable_auto_commit=False)
        try:
            reader.assign(wanted)
            reader.seek_to_beginning(*wanted)
            now = time.time() * 1000
            while any(reader.position(tp) < committed[tp] for tp in wanted):
                for tp, batch in reader.poll(timeout_ms=500).items():
                    head = [r for r in batch if r.offset < committed[tp]]
                    for record in _records(self.codec, head):
                        self.book.apply(record, now)
        finally:
            reader.close()

    def run(self) -> int:
        consumer = self._consumer()
        try:
            consumer.subscribe([self.topic])
            self._catch_up(consumer)
            if self.book.open:
                self.client.post_until_accepted(self.book.refreshed(time.time() * 1000),
                                                lambda: self.stopping)  # fmt: skip
            print(f"alertmanager: forwarding {self.topic} to {self.client.url} "
                  f"({len(self.book.open)} open)", flush=True)  # fmt: skip
            last_resend = time.monotonic()
            while not self.stopping:
                polled = consumer.poll(timeout_ms=500)
                alerts, offsets = [], {}
                for tp, batch in polled.items():
                    for record in _records(self.codec, batch):
                        alerts += self.book.apply(record, time.time() * 1000)
                    offsets[tp] = OffsetAndMetadata(batch[-1].offset + 1, "", -1)
                if alerts and not self.client.post_until_accepted(alerts, lambda: self.stopping):
                    break  # stopping before Alertmanager took them: not committed, sent again
                for alert in alerts:
                    labels = alert["labels"]
                    print(f"alertmanager: posted {labels['service']}/{labels['slo']} "
                          f"{labels['tier']}, ends {alert['endsAt']}", flush=True)  # fmt: skip
                if offsets:
                    consumer.commit(offsets)
                    self.forwarded += len(alerts)
                if time.monotonic() - last_resend >= RESEND_S and self.book.open:
                    self.client.post_until_accepted(self.book.refreshed(time.time() * 1000),
                                                    lambda: self.stopping)  # fmt: skip
                    last_resend = time.monotonic()
        finally:
            consumer.close()
        return 0


def run_alertmanager(args: argparse.Namespace, settings: Settings) -> int:
    forwarder = AlertForwarder(settings)
    signal.signal(signal.SIGTERM, forwarder.stop)
    signal.signal(signal.SIGINT, forwarder.stop)
    try:
        return forwarder.run()
    except KeyboardInterrupt:
        return 130
    finally:
        print(f"alertmanager: {forwarder.forwarded} transitions forwarded", file=sys.stderr)
