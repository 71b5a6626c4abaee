"""Why a Kafka client could not connect, from what kafka-python logged (``connect``)."""

from __future__ import annotations

from slipstream.connect import _sasl_login_lost

CONN = "<KafkaConnection node_id=bootstrap-0 host=[127.0.0.1:26149<-43404] (initializing)>"
LOST = "<KafkaConnection node_id=bootstrap-0 (disconnected)>: Connection lost: " \
       "KafkaConnectionError: socket disconnected"  # fmt: skip


def scram_until(final_answered: bool) -> list[str]:
    """A SCRAM login as kafka-python's connection logs it: two SaslAuthenticate rounds."""
    lines = [
        f"{CONN}: Connection made",
        f"{CONN} Request 1: ApiVersionsRequest(version=4, client_software_name='k')",
        f"{CONN}: Response 1 (3.7 ms): ApiVersionsResponse(error_code=0)",
        f"{CONN} Request 2: SaslHandshakeRequest(version=1, mechanism='SCRAM-SHA-512')",
        f"{CONN}: Response 2 (1.4 ms): SaslHandshakeResponse(error_code=0)",
        f"{CONN} Request 3: SaslAuthenticateRequest(version=2, auth_bytes=b'n,,n=u')",
        f"{CONN}: Response 3 (2.1 ms): SaslAuthenticateResponse(error_code=0)",
        f"{CONN} Request 4: SaslAuthenticateRequest(version=2, auth_bytes=b'c=biws')",
    ]
    if final_answered:
        lines.append(f"{CONN}: Response 4 (2.0 ms): SaslAuthenticateResponse(error_code=0)")
    return lines


def test_a_connection_lost_before_the_final_login_answer_is_a_refused_login() -> None:
    assert _sasl_login_lost([*scram_until(final_answered=False), LOST])


def test_a_connection_lost_after_a_completed_login_is_not() -> None:
    logged_in = scram_until(final_answered=True)
    assert not _sasl_login_lost([*logged_in, LOST])
    later = f"{CONN} Request 5: MetadataRequest(version=12, topics=None)"
    assert not _sasl_login_lost([*logged_in, later, LOST])


def test_a_connection_lost_before_any_login_is_not() -> None:
    assert not _sasl_login_lost([*scram_until(final_answered=False)[:3], LOST])
