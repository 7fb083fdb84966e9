"""The acknowledged-stream envelope: round trips, and garbage never decodes (pure)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_conn.delivery import EnvelopeError
from resilient_conn.delivery.envelope import (
    MAX_HELLO_SIZE,
    MAX_SEQ,
    Ack,
    Data,
    Hello,
    decode,
    encode_ack,
    encode_data,
    encode_hello,
    split_data,
)

seqs = st.integers(min_value=1, max_value=MAX_SEQ)
sessions = st.from_regex(r"[A-Za-z0-9._:@/+=-]{1,128}", fullmatch=True)
epochs = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
payloads = st.one_of(st.text(max_size=200), st.binary(max_size=200))


@given(seqs, payloads)
def test_data_round_trips_with_its_frame_type(seq: int, payload: str | bytes) -> None:
    """Any payload, text or binary (newlines, NULs, non-ASCII included), comes back exactly,
    in a frame of the same type, with its sequence number."""
    frame = encode_data(seq, payload)
    assert type(frame) is type(payload)
    assert decode(frame) == Data(seq, payload)


@given(st.integers(min_value=0, max_value=MAX_SEQ))
def test_ack_round_trips(seq: int) -> None:
    """A cumulative ack of any position (0 = nothing yet) comes back exactly."""
    assert decode(encode_ack(seq)) == Ack(seq)


@given(sessions, epochs, seqs, st.none() | epochs, st.integers(min_value=0, max_value=MAX_SEQ))
def test_hello_round_trips(
    session: str, epoch: str, first: int, peer_epoch: str | None, delivered: int
) -> None:
    """Every valid hello comes back field for field, and stays under the size limit."""
    hello = Hello(session, epoch, first, peer_epoch, delivered)
    frame = encode_hello(hello)
    assert len(frame) <= MAX_HELLO_SIZE
    assert decode(frame) == hello


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_garbage_raises_envelope_error_only(frame: str | bytes) -> None:
    """Arbitrary input either decodes to a valid frame or raises EnvelopeError (a ValueError):
    never another exception, never a frame with an out-of-range number."""
    try:
        decoded = decode(frame)
    except ValueError as exc:  # EnvelopeError is one
        if not isinstance(exc, EnvelopeError):
            raise
        return
    if isinstance(decoded, Data):
        assert 1 <= decoded.seq <= MAX_SEQ
    elif isinstance(decoded, Ack):
        assert 0 <= decoded.seq <= MAX_SEQ


@given(st.dictionaries(st.text(max_size=10), st.none() | st.integers() | st.text(max_size=10)))
def test_random_json_hellos_are_refused_or_valid(body: dict[str, object]) -> None:
    """A hello with arbitrary JSON fields is refused with EnvelopeError unless every field is
    valid."""
    with contextlib.suppress(EnvelopeError):
        decode("H" + json.dumps(body))


def _hello(**fields: object) -> str:
    body = {"v": 1, "session": "s", "epoch": "e", "first": 1, "peer_epoch": None, "delivered": 0}
    return "H" + json.dumps({**body, **fields})


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        ("", "unknown frame kind"),
        ("X1", "unknown frame kind"),
        ("D1", "no newline"),
        ("D\nx", "not a decimal"),
        ("D0\nx", "from 1"),
        ("D01\nx", "not a decimal"),
        ("D-1\nx", "not a decimal"),
        ("D+1\nx", "not a decimal"),
        ("D\uff11\nx", "not a decimal"),  # a full-width digit: isdigit() but not ASCII
        (f"D{MAX_SEQ + 1}\nx", "2**63-1"),
        ("D" + "9" * 40 + "\nx", "no newline"),
        ("A", "not a decimal"),
        ("A 1", "not a decimal"),
        (b"A1", "binary frame must be a data frame"),
        (b"D1", "no newline"),
        (b"\xff\xfe", "binary frame must be a data frame"),
        ("H{", "not JSON"),
        ("H[]", "not a JSON object"),
        ('H{"v":2}', "unsupported version"),
        ('H{"v":true}', "unsupported version"),
        (_hello(session="a b"), "session"),
        (_hello(epoch=""), "epoch"),
        (_hello(first=0), "first"),
        (_hello(delivered=-1), "delivered"),
        (_hello(first=True), "first"),
        (_hello(peer_epoch=5), "epoch"),
        ("H" + " " * MAX_HELLO_SIZE, "longer than"),
    ],
)
def test_bad_frames_name_what_is_wrong(frame: str | bytes, why: str) -> None:
    """Each malformed frame a hostile or buggy peer could send is refused with a message that
    says what is wrong."""
    with pytest.raises(EnvelopeError, match=why.replace("*", r"\*").replace("+", r"\+")):
        decode(frame)


def test_encoders_refuse_bad_values() -> None:
    """Encoding checks its inputs: a bad payload type, session or sequence number is refused
    before anything reaches the wire."""
    with pytest.raises(TypeError, match="str or bytes"):
        encode_data(1, 42)  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError, match="session"):
        encode_hello(Hello("has space", "e", 1, None, 0))
    with pytest.raises(EnvelopeError, match="first"):
        encode_hello(Hello("s", "e", 0, None, 0))
    with pytest.raises(EnvelopeError, match="epoch"):
        encode_hello(Hello("s", "e", 1, "bad epoch!", 0))


@given(
    st.one_of(
        st.text(max_size=60),
        st.builds(lambda s, p: f"D{s}\n{p}", st.text(max_size=22), st.text(max_size=5)),
    )
)
def test_fast_path_agrees_with_the_full_decoder(frame: str) -> None:
    """The receive hot path (split_data) accepts exactly the text data frames decode()
    accepts, with the same number and payload; anything else falls back to decode()."""
    fast = split_data(frame)
    try:
        decoded = decode(frame)
    except EnvelopeError:
        assert fast is None
        return
    if isinstance(decoded, Data):
        assert fast == (decoded.seq, decoded.payload)
    else:
        assert fast is None
