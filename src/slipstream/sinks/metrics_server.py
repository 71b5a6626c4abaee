"""The /metrics endpoint, always in the Prometheus text format (version 0.0.4).

Why not prometheus_client's own server: when Prometheus asks for OpenMetrics,
prometheus-client 0.26's OpenMetrics writer turns the colons of a metric name
into underscores in the sample lines (``slo:objective:ratio`` arrives as
``slo_objective_ratio``), so Sloth's recording-rule names would never reach
Prometheus. The text format keeps them; every Prometheus version reads it.
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def serve(
    host: str, port: int, registry: CollectorRegistry, tls: tuple[str, str] | None = None
) -> ThreadingHTTPServer:
    """Serve ``registry`` on http://host:port/metrics from a daemon thread; over HTTPS
    when ``tls`` names a certificate (chain) file and its key file."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            if path not in ("/metrics", "/"):
                self.send_error(404)
                return
            # ?name[]=... asks for those series only, as prometheus_client's own handler
            # allows: a client polling one counter often does not pay for every SLO's.
            names = parse_qs(query).get("name[]")
            try:
                body = generate_latest(registry.restricted_registry(names) if names else registry)
            except Exception as exc:  # a collector bug: say so rather than drop the connection
                self.send_error(500, explain=str(exc))
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would flood the worker's log

    server = ThreadingHTTPServer((host, port), Handler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        # The handshake happens in the request's thread: a slow client never holds up accept.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
