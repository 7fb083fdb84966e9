"""The default failure classifier: retry, retry-after (server hints) or fatal."""

from __future__ import annotations

import ssl

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
    InvalidURI,
)
from websockets.frames import Close
from websockets.http11 import Response

from resilient_conn._core.errors import ConfigError
from resilient_conn.resilience.classify import (
    TRY_AGAIN_LATER_DELAY,
    Action,
    classifier,
    default_classify,
    parse_retry_after,
)


def _status(code: int, **headers: str) -> InvalidStatus:
    return InvalidStatus(Response(code, "x", Headers(headers), b""))


def _closed(code: int, reason: str = "") -> ConnectionClosedError:
    return ConnectionClosedError(Close(code, reason), None)


@pytest.mark.parametrize("code", [401, 403, 404])
def test_auth_and_not_found_are_fatal(code: int) -> None:
    """401/403/404 on the handshake stop the connection instead of storming the server."""
    verdict = default_classify(_status(code))
    assert verdict.action is Action.FATAL
    assert verdict.status == code


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_header_is_honoured(code: int) -> None:
    """429/503 with Retry-After: 2 mean: wait at least two seconds."""
    verdict = default_classify(_status(code, **{"Retry-After": "2"}))
    assert verdict.action is Action.RETRY_AFTER
    assert verdict.delay == 2.0


def test_503_without_hint_and_500_retry_with_backoff() -> None:
    """Server errors without a hint are retried on the normal backoff schedule."""
    assert default_classify(_status(503)).action is Action.RETRY
    assert default_classify(_status(500)).action is Action.RETRY


def test_close_1013_waits_for_the_number_in_its_reason_or_a_default() -> None:
    """Close 1013 (try again later) is a hint: a number in the reason, else the default."""
    assert default_classify(_closed(1013, "retry in 7 s")).delay == 7.0
    assert default_classify(_closed(1013)).delay == TRY_AGAIN_LATER_DELAY
    assert default_classify(_closed(1013)).action is Action.RETRY_AFTER


@pytest.mark.parametrize("code", [1012, 1001])
def test_restart_and_going_away_reconnect_soon(code: int) -> None:
    """Close 1012 (service restart) and 1001 (going away, a deploy) reconnect after the
    first, jittered, delay: the server left on purpose and is coming back."""
    exc = ConnectionClosedOK(Close(code, ""), None) if code == 1001 else _closed(code)
    verdict = default_classify(exc)
    assert verdict.action is Action.RETRY
    assert verdict.soon
    assert verdict.kind == f"close_{code}"


@pytest.mark.parametrize("code", [1000, 1011, 4000])
def test_other_closes_take_a_backoff_step(code: int) -> None:
    """Other server closes (1000, 1011, application codes) are not a hint to come back now."""
    exc = ConnectionClosedOK(Close(code, ""), None) if code < 1002 else _closed(code)
    assert not default_classify(exc).soon


@pytest.mark.parametrize("code", [1000, 1001, 1011, 4000])
def test_other_server_closes_are_retried(code: int) -> None:
    """A server closing with 1000/1001 went away: that is not the end of a consumer."""
    exc = ConnectionClosedOK(Close(code, ""), None) if code < 1002 else _closed(code)
    verdict = default_classify(exc)
    assert verdict.action is Action.RETRY
    assert verdict.kind == ("close_4xxx" if code == 4000 else f"close_{code}")


def test_abnormal_close_is_lost() -> None:
    """No close frame at all (1006) is a lost connection, retried."""
    assert default_classify(ConnectionClosedError(None, None)).kind == "lost"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(), "refused"),
        (ConnectionResetError(), "reset"),
        (TimeoutError(), "timeout"),
        (OSError("dns"), "os_error"),
    ],
)
def test_network_errors_are_retried(exc: BaseException, kind: str) -> None:
    """Refused, reset, timeouts and other OS errors are transient."""
    verdict = default_classify(exc)
    assert verdict.action is Action.RETRY
    assert verdict.kind == kind


def test_bad_url_and_certificate_failures_are_fatal() -> None:
    """An invalid URL or a TLS certificate failure will not fix itself."""
    assert default_classify(InvalidURI("x", "bad")).fatal
    assert default_classify(ConfigError("url bad")).fatal
    assert default_classify(ssl.SSLCertVerificationError("cert")).fatal


def test_classifier_can_make_401_retryable() -> None:
    """A user refreshing tokens can mark 401 retryable; other fatal statuses stay fatal."""
    classify = classifier(retry_statuses={401})
    assert classify(_status(401)).action is Action.RETRY
    assert classify(_status(403)).fatal
    assert classifier(fatal_statuses={500})(_status(500)).fatal


def test_parse_retry_after_forms() -> None:
    """Retry-After may be seconds or an HTTP date; garbage is ignored; huge values capped."""
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("  ") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("99999999") == 3600.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=0.0) == 10.0
