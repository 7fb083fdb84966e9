"""The coordinator's pure decision core: unit, property and stateful tests (no event loop)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from resilient_conn import ConfigError
from resilient_conn.coordination import DialKind, Phase, RecoverySettings, UpstreamState
from resilient_conn.coordination.decide import admit, fail, release, succeed

S0 = UpstreamState()


def test_defaults_are_documented_values() -> None:
    """The defaults are the module constants the docs name."""
    s = RecoverySettings()
    assert (s.failure_threshold, s.open_time, s.max_open) == (3, 0.5, 1.0)
    assert (s.ramp_rate, s.ramp_burst, s.probe_ttl, s.max_dialing) == (600.0, 5, 15.0, 64)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": True}, "failure_threshold"),
        ({"open_time": 0}, "open_time"),
        ({"open_time": math.nan}, "open_time"),
        ({"open_multiplier": 0.5}, "open_multiplier"),
        ({"open_time": 5.0, "max_open": 1.0}, "max_open"),
        ({"probe_ttl": -1}, "probe_ttl"),
        ({"ramp_rate": 0}, "ramp_rate"),
        ({"ramp_rate": "fast"}, "ramp_rate"),
        ({"ramp_burst": 0}, "ramp_burst"),
        ({"ramp_burst": 2.5}, "ramp_burst"),
        ({"ramp_hold": -1.0}, "ramp_hold"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], fragment: str) -> None:
    """Each out-of-range setting gets a ConfigError that names it."""
    with pytest.raises(ConfigError, match=fragment):
        RecoverySettings(**kwargs)  # type: ignore[arg-type]


def test_threshold_failures_open_then_one_probe_then_ramp() -> None:
    """Three failures open; after the open time one caller probes; its success starts a ramp."""
    s = RecoverySettings(ramp_burst=2, ramp_rate=10.0, open_time=1.0)
    st_ = S0
    for _ in range(3):
        st_ = fail(st_, s, "x", 0.0)
    assert st_.phase is Phase.OPEN
    assert st_.open_until == pytest.approx(1.0)
    st_, a = admit(st_, s, "a", 0.5)
    assert a.kind is None
    assert a.wait == pytest.approx(0.5)
    assert "waiting for the probe time" in a.reason
    st_, a = admit(st_, s, "a", 1.0)
    assert a.kind is DialKind.PROBE
    st_, b = admit(st_, s, "b", 1.0)
    assert b.kind is None
    assert "probe held by another connection" in b.reason
    assert b.wait == pytest.approx(s.probe_ttl)
    st_ = succeed(st_, s, "a", 1.1, stable=False)
    assert st_.phase is Phase.CLOSED
    assert st_.ramping
    kinds = []
    for name in "bcd":
        st_, adm = admit(st_, s, name, 1.1)
        kinds.append((adm.kind, adm.reserved))
    assert kinds[:2] == [(DialKind.RAMP, False), (DialKind.RAMP, False)]
    assert kinds[2] == (None, True)  # third waits for its slot, 0.1 s later
    st_, adm = admit(st_, s, "d", 1.2, reserved=True)
    assert adm.kind is DialKind.RAMP


def test_probe_failure_grows_open_time_up_to_the_cap_and_stable_resets() -> None:
    """Each failed probe lengthens the open time (x2) up to max_open; a stable success resets."""
    s = RecoverySettings(open_time=1.0, max_open=5.0)
    st_, now = S0, 0.0
    for _ in range(3):
        st_ = fail(st_, s, "x", now)
    opens = []
    for i in range(6):
        opens.append(st_.open_until - now)
        now = st_.open_until
        st_, a = admit(st_, s, f"p{i}", now)
        assert a.kind is DialKind.PROBE
        st_ = fail(st_, s, f"p{i}", now)
    assert opens == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    now = st_.open_until
    st_, _ = admit(st_, s, "ok", now)
    st_ = succeed(st_, s, "ok", now, stable=True)
    assert (st_.phase, st_.reopenings) == (Phase.CLOSED, 0)


def test_probe_connection_that_dies_before_stable_reopens_at_once() -> None:
    """An upstream that accepts and drops: the probe's round trip closes the circuit, its
    death before stable_after re-opens it at once and for longer (one dial per cycle)."""
    s = RecoverySettings(failure_threshold=3, open_time=1.0, max_open=2.0)
    st_ = S0
    for _ in range(3):
        st_ = fail(st_, s, "x", 0.0)
    st_, a = admit(st_, s, "p", 1.0)
    assert a.kind is DialKind.PROBE
    st_ = succeed(st_, s, "p", 1.0, stable=False)
    assert (st_.phase, st_.last_probe) == (Phase.CLOSED, "p")
    st_ = fail(st_, s, "p", 1.1)
    assert st_.phase is Phase.OPEN
    assert st_.open_until == pytest.approx(1.1 + 2.0)
    # Once the probe's connection proves stable, its later failures are ordinary ones.
    st_, _ = admit(st_, s, "q", 3.1)
    st_ = succeed(st_, s, "q", 3.2, stable=False)
    st_ = succeed(st_, s, "q", 5.0, stable=True)
    assert (st_.last_probe, st_.reopenings) == ("", 0)
    assert fail(st_, s, "q", 6.0).phase is Phase.CLOSED


def test_released_or_expired_probe_lease_passes_to_the_next_caller() -> None:
    """A released lease or one past its TTL lets the next caller probe at once."""
    s = RecoverySettings(probe_ttl=3.0)
    st_ = S0
    for _ in range(3):
        st_ = fail(st_, s, "x", 0.0)
    st_, a = admit(st_, s, "a", 1.0)
    assert a.kind is DialKind.PROBE
    released = release(st_, s, "a", 1.5)
    assert admit(released, s, "b", 1.5)[1].kind is DialKind.PROBE
    assert admit(st_, s, "b", 3.9)[1].kind is None
    assert admit(st_, s, "b", 4.0)[1].kind is DialKind.PROBE
    assert release(st_, s, "not-the-holder", 1.5) == st_


def test_outcomes_of_non_probes_while_open_are_ignored_except_stable() -> None:
    """A stale failure does not touch an open circuit; a stable connection closes it."""
    s = RecoverySettings()
    st_ = S0
    for _ in range(3):
        st_ = fail(st_, s, "x", 0.0)
    assert fail(st_, s, "late", 0.1) == st_
    assert succeed(st_, s, "late", 0.1, stable=False) == st_
    closed = succeed(st_, s, "late", 0.1, stable=True)
    assert closed.phase is Phase.CLOSED
    assert closed.ramping


def test_ramp_ends_once_the_bucket_refills() -> None:
    """After burst/rate seconds without demand the ramp is off and dials are NORMAL."""
    s = RecoverySettings(ramp_burst=5, ramp_rate=10.0, ramp_hold=1.0)
    st_ = UpstreamState(phase=Phase.CLOSED, ramping=True, tokens=0.0, tokens_at=0.0)
    st_, a = admit(st_, s, "a", 0.5)
    assert (a.kind, st_.ramping) == (DialKind.RAMP, True)  # full, but the hold is not over
    st_, a = admit(st_, s, "b", 1.6)
    assert (a.kind, st_.ramping) == (DialKind.NORMAL, False)


def test_times_from_a_skewed_or_garbage_store_are_capped() -> None:
    """An open-until or lease expiry far in the future (clock skew, garbage) is cut to the
    caps: no caller waits longer than max_open / probe_ttl from now."""
    s = RecoverySettings()
    far = UpstreamState(phase=Phase.OPEN, open_until=1e18)
    _, a = admit(far, s, "a", 100.0)
    assert a.wait == pytest.approx(s.max_open)
    held = UpstreamState(phase=Phase.HALF_OPEN, probe_holder="x", probe_expires=1e18)
    _, b = admit(held, s, "b", 100.0)
    assert b.wait == pytest.approx(s.probe_ttl)


@given(st.integers(0, 10_000), st.floats(0.01, 100), st.floats(1, 10), st.floats(0, 1000))
def test_open_time_never_exceeds_the_cap(n: int, base: float, mult: float, extra: float) -> None:
    """open_for(n) is within [open_time, max_open] for every n, however large."""
    s = RecoverySettings(open_time=base, open_multiplier=mult, max_open=base + extra)
    assert base <= s.open_for(n) <= s.max_open


@settings(max_examples=50)
@given(st.dictionaries(st.text(max_size=12), st.from_type(object), max_size=12) | st.none())
def test_garbage_state_decodes_to_a_fresh_state(data: object) -> None:
    """from_dict never raises: garbage from a shared store gives a fresh CLOSED state."""
    state = UpstreamState.from_dict(data)
    assert isinstance(state, UpstreamState)


@given(st.builds(UpstreamState, failures=st.integers(0, 9), tokens=st.floats(-50, 50)))
def test_state_round_trips_through_dict(state: UpstreamState) -> None:
    """to_dict / from_dict is lossless for valid states."""
    assert UpstreamState.from_dict(state.to_dict()) == state


class CoordinatorModel(RuleBasedStateMachine):
    """Many callers admit, fail, succeed, release and let time pass against one state."""

    @initialize(
        threshold=st.integers(1, 4),
        burst=st.integers(1, 5),
        rate=st.sampled_from([1.0, 5.0, 50.0]),
        ttl=st.sampled_from([0.5, 2.0]),
        max_open=st.sampled_from([1.0, 3.0, 8.0]),
    )
    def setup(self, threshold: int, burst: int, rate: float, ttl: float, max_open: float) -> None:
        """Pick settings; start closed at t=0."""
        self.s = RecoverySettings(
            failure_threshold=threshold,
            ramp_burst=burst,
            ramp_rate=rate,
            probe_ttl=ttl,
            open_time=min(1.0, max_open),
            max_open=max_open,
        )
        self.state = UpstreamState()
        self.now = 0.0
        self.probes: dict[str, float] = {}  # holder -> lease expiry, for granted probes
        self.reserved: set[str] = set()
        self.ramp_start: float | None = None
        self.ramp_slots: list[float] = []  # slot times of ramp admissions this episode
        self.next_id = 0

    def _apply(self, new: UpstreamState) -> None:
        old = self.state
        if new.ramping and not old.ramping:
            self.ramp_start, self.ramp_slots = self.now, []
        if new.phase is Phase.OPEN and old.phase is not Phase.OPEN:
            assert new.open_until - self.now <= self.s.max_open + 1e-9
            self.probes.clear()
        self.state = new

    @rule(holder=st.integers(0, 5))
    def do_admit(self, holder: int) -> None:
        """A caller (maybe one holding a reserved slot) asks to dial."""
        name = f"h{holder}"
        reserved = name in self.reserved
        new, adm = admit(self.state, self.s, name, self.now, reserved=reserved)
        ramping_before = self.state.ramping
        self._apply(new)
        if adm.kind is DialKind.PROBE:
            live = [h for h, exp in self.probes.items() if exp > self.now and h != name]
            assert not live, f"second probe granted while {live} holds a live lease"
            self.probes[name] = self.now + self.s.probe_ttl
        if adm.kind is not None:
            self.reserved.discard(name)
        if adm.reserved:
            self.reserved.add(name)
        if ramping_before or new.ramping:
            if adm.kind is DialKind.RAMP and not reserved:
                self.ramp_slots.append(self.now)
            elif adm.reserved and not reserved:
                self.ramp_slots.append(self.now + adm.wait)

    @rule(holder=st.integers(0, 5))
    def do_fail(self, holder: int) -> None:
        """A caller's dial failed."""
        name = f"h{holder}"
        self._apply(fail(self.state, self.s, name, self.now))
        self.probes.pop(name, None)

    @rule(holder=st.integers(0, 5), stable=st.booleans())
    def do_succeed(self, holder: int, stable: bool) -> None:
        """A caller's dial worked (round trip or stable)."""
        name = f"h{holder}"
        self._apply(succeed(self.state, self.s, name, self.now, stable=stable))
        self.probes.pop(name, None)

    @rule(holder=st.integers(0, 5))
    def do_release(self, holder: int) -> None:
        """A caller was cancelled."""
        name = f"h{holder}"
        self._apply(release(self.state, self.s, name, self.now))
        self.probes.pop(name, None)

    @rule(dt=st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0, 5.0]))
    def tick(self, dt: float) -> None:
        """Time passes."""
        self.now += dt

    @invariant()
    def ramp_admissions_within_bucket(self) -> None:
        """Slots handed out since the ramp began never exceed burst + rate * elapsed."""
        if self.ramp_start is None:
            return
        for slot in self.ramp_slots:
            upto = sum(1 for x in self.ramp_slots if x <= slot + 1e-9)
            allowed = self.s.ramp_burst + self.s.ramp_rate * (slot - self.ramp_start) + 1e-6
            assert upto <= allowed

    @invariant()
    def open_time_capped(self) -> None:
        """An open circuit never waits longer than max_open from now."""
        if self.state.phase is Phase.OPEN:
            assert self.state.open_until - self.now <= self.s.max_open + 1e-9

    @invariant()
    def one_probe_holder(self) -> None:
        """The state names at most one probe holder and only while HALF_OPEN."""
        if self.state.probe_holder:
            assert self.state.phase is Phase.HALF_OPEN


CoordinatorModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestCoordinatorModel = CoordinatorModel.TestCase
