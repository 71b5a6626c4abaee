"""slipstream: a real-time, event-time SLO pipeline on Kafka."""

__version__ = "0.1.0"
