import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.telephone_event import (
    EVENT_FLASH,
    EventPacket,
    TelephoneEvent,
    TelephoneEventError,
    TelephoneEventReceived,
    TelephoneEventReceiver,
    TelephoneEventSender,
    digit_for_event,
    event_for_digit,
)

# --- payload codec ----------------------------------------------------------------------------


def test_payload_known_bytes() -> None:
    # RFC 4733 §2.3: event 5, E=1, R=0, volume 10, duration 800 (100 ms at 8 kHz)
    ev = TelephoneEvent(5, end=True, volume=10, duration=800)
    assert ev.serialize() == bytes([5, 0x80 | 10, 0x03, 0x20])
    assert TelephoneEvent.parse(bytes([5, 0x8A, 0x03, 0x20])) == ev
    assert ev.digit == "5"


def test_reserved_bit_ignored_and_extra_blocks_ignored() -> None:
    ev = TelephoneEvent.parse(bytes([11, 0x40 | 7, 0, 160]) + b"\x00\x00\x00\x00")
    assert ev == TelephoneEvent(11, end=False, volume=7, duration=160)
    assert ev.digit == "#"


def test_short_payload_raises() -> None:
    for data in (b"", b"\x01", b"\x01\x02\x03"):
        with pytest.raises(TelephoneEventError):
            TelephoneEvent.parse(data)
    assert issubclass(TelephoneEventError, ValueError)


@pytest.mark.parametrize(
    "ev", [TelephoneEvent(256), TelephoneEvent(1, volume=64), TelephoneEvent(1, duration=65536)]
)
def test_serialize_rejects_out_of_range(ev: TelephoneEvent) -> None:
    with pytest.raises(ValueError):
        ev.serialize()


def test_digit_mapping() -> None:
    digits = "0123456789*#ABCD"
    assert [event_for_digit(d) for d in digits] == list(range(16))
    assert event_for_digit("a") == 12 and event_for_digit("d") == 15
    assert event_for_digit("flash") == EVENT_FLASH == event_for_digit("!")
    assert [digit_for_event(i) for i in range(16)] == list(digits)
    assert digit_for_event(16) == "flash"
    assert digit_for_event(17) is None
    for bad in ("E", "x", "", "12"):
        with pytest.raises(TelephoneEventError):
            event_for_digit(bad)


# --- sender -----------------------------------------------------------------------------------


def run_sender(
    sender: TelephoneEventSender, ticks: int, start_ts: int = 1000, step: int = 160
) -> list[tuple[int, EventPacket]]:
    out = []
    for i in range(ticks):
        ts = (start_ts + i * step) & 0xFFFFFFFF
        for packet in sender.poll(ts):
            out.append((i, packet))
    return out


def test_sender_digit_sequence_8khz() -> None:
    sender = TelephoneEventSender(8000, tone_ms=100, pause_ms=40)
    sender.queue("5")
    assert sender.pending == 1 and not sender.busy
    sent = run_sender(sender, 20)
    packets = [p for _, p in sent]
    # start + 3 updates (ticks at 0..80 ms, durations 160..640) + end x3
    assert [p.event.duration for p in packets] == [160, 320, 480, 640, 800, 800, 800]
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert [p.event.end for p in packets] == [False] * 4 + [True] * 3
    assert {p.timestamp for p in packets} == {1000}  # all carry the event's start timestamp
    assert {p.event.event for p in packets} == {5}
    assert [i for i, _ in sent] == list(range(7))  # one packet per packet interval
    assert packets[-1].payload == packets[-2].payload == packets[-3].payload
    assert TelephoneEvent.parse(packets[0].payload) == packets[0].event
    assert not sender.busy and sender.pending == 0


def test_sender_update_interval_50ms() -> None:
    sender = TelephoneEventSender(8000, tone_ms=200, update_interval_ms=50)
    sender.queue("1")
    sent = run_sender(sender, 20)
    updates = [(i, p.event.duration) for i, p in sent if not p.event.end]
    # start at tick 0; then ticks 3 (60 ms), 6 (120 ms), 9 (180 ms) as >= 50 ms have passed
    assert updates == [(0, 160), (3, 640), (6, 1120)]
    ends = [i for i, p in sent if p.event.end]
    assert ends == [9, 10, 11]  # tick 9 reaches the 200 ms tone length
    assert all(p.event.duration == 1600 for _, p in sent if p.event.end)


def test_sender_multiple_digits_with_pause_and_busy_flag() -> None:
    sender = TelephoneEventSender(8000, tone_ms=60, pause_ms=60)
    sender.queue("1 2")
    busy_ticks = []
    starts = []
    for i in range(40):
        packets = sender.poll(1000 + i * 160)
        if sender.busy:
            busy_ticks.append(i)
        starts += [(i, p) for p in packets if p.marker]
    assert [p.event.event for _, p in starts] == [1, 2]
    first_end_tick = 4  # 60 ms tone: start, update, end x3 at ticks 0..4
    second_start = starts[1][0]
    assert second_start - first_end_tick == 3  # 60 ms pause = 3 ticks of 20 ms
    assert starts[1][1].timestamp == 1000 + second_start * 160
    assert 0 in busy_ticks and second_start in busy_ticks and 39 not in busy_ticks


def test_sender_48khz_clock_and_timestamp_wrap() -> None:
    sender = TelephoneEventSender(48000, tone_ms=100)
    sender.queue("#")
    start = 0xFFFFFFFF - 1000
    packets = [p for _, p in run_sender(sender, 10, start_ts=start, step=960)]
    assert packets[0].timestamp == start
    assert [p.event.duration for p in packets] == [960, 1920, 2880, 3840, 4800, 4800, 4800]
    assert packets[-1].event.end


def test_sender_long_tone_capped_to_16_bits() -> None:
    sender = TelephoneEventSender(48000, tone_ms=5000)
    sender.queue("0")
    packets = [p for _, p in run_sender(sender, 400, step=960)]
    assert packets[-1].event.end and packets[-1].event.duration == 65535
    assert all(p.event.duration <= 65535 for p in packets)


def test_sender_flash_and_raw_event() -> None:
    sender = TelephoneEventSender()
    sender.queue("!")
    sender.queue_event(70)
    events = [p.event.event for _, p in run_sender(sender, 40) if p.marker]
    assert events == [EVENT_FLASH, 70]
    with pytest.raises(ValueError):
        sender.queue_event(300)
    with pytest.raises(TelephoneEventError):
        sender.queue("12x")


def test_sender_idle_returns_nothing() -> None:
    assert TelephoneEventSender().poll(0) == []


# --- receiver ---------------------------------------------------------------------------------


def feed(receiver: TelephoneEventReceiver, packets: list[EventPacket]) -> list[str | None]:
    digits = []
    for p in packets:
        for ev in receiver.receive(p.payload, p.timestamp, p.marker):
            digits.append(ev.digit)
    return digits


def sender_packets(digits: str, **kwargs: int) -> list[EventPacket]:
    sender = TelephoneEventSender(8000, **kwargs)
    sender.queue(digits)
    return [p for _, p in run_sender(sender, 200)]


def test_sender_to_receiver_each_digit_once() -> None:
    packets = sender_packets("123*#0ABCD")
    assert feed(TelephoneEventReceiver(), packets) == list("123*#0ABCD")


def test_same_digit_twice_is_reported_twice() -> None:
    assert feed(TelephoneEventReceiver(), sender_packets("55")) == ["5", "5"]


def test_lost_start_packet_still_reports() -> None:
    packets = sender_packets("7")
    assert feed(TelephoneEventReceiver(), packets[1:]) == ["7"]


def test_only_end_packets_received() -> None:
    packets = sender_packets("9")
    ends = [p for p in packets if p.event.end]
    assert feed(TelephoneEventReceiver(), ends) == ["9"]


def test_duplicate_and_reordered_packets() -> None:
    packets = sender_packets("12")
    shuffled = packets[:3] + packets[:3] + packets[3:]
    late = shuffled + [packets[0], packets[2]]  # stale packets of the first event
    assert feed(TelephoneEventReceiver(), late) == ["1", "2"]


def test_receiver_reports_fields() -> None:
    receiver = TelephoneEventReceiver()
    payload = TelephoneEvent(16, volume=20, duration=160).serialize()
    assert receiver.receive(payload, 5000, marker=True) == [TelephoneEventReceived(16, 5000, 20)]
    assert receiver.receive(payload, 5000) == []


def test_receiver_drops_malformed_payloads() -> None:
    receiver = TelephoneEventReceiver()
    assert receiver.receive(b"\x01", 100) == []
    assert feed(receiver, sender_packets("4")) == ["4"]


def test_long_event_segments_not_repeated() -> None:
    # RFC 4733 §2.5.1.3: a long event continues with a new timestamp and no marker
    receiver = TelephoneEventReceiver()
    first = TelephoneEvent(3, duration=65535).serialize()
    assert [e.digit for e in receiver.receive(first, 1000, marker=True)] == ["3"]
    second = TelephoneEvent(3, duration=8000).serialize()
    assert receiver.receive(second, 1000 + 65535) == []
    end = TelephoneEvent(3, end=True, duration=16000).serialize()
    assert receiver.receive(end, 1000 + 65535) == []
    # after the end, the same digit again is a new press even without a marker
    assert [e.digit for e in receiver.receive(first, 200000)] == ["3"]


def test_receiver_across_timestamp_wrap() -> None:
    sender = TelephoneEventSender(8000, tone_ms=60, pause_ms=40)
    sender.queue("89")
    packets = [p for _, p in run_sender(sender, 30, start_ts=0xFFFFFF00)]
    assert packets[0].timestamp > packets[-1].timestamp  # the second event is after the wrap
    assert feed(TelephoneEventReceiver(), packets) == ["8", "9"]


# --- properties -------------------------------------------------------------------------------

DIGITS = st.text(alphabet="0123456789*#ABCD", min_size=1, max_size=6)


@given(
    DIGITS,
    st.sampled_from([8000, 16000, 48000]),
    st.sampled_from([10, 20, 30]),
    st.integers(40, 400),
    st.integers(0, 200),
    st.none() | st.integers(20, 100),
    st.integers(0, 0xFFFFFFFF),
)
@settings(max_examples=150, deadline=None)
def test_sender_invariants(
    digits: str,
    rate: int,
    ptime: int,
    tone_ms: int,
    pause_ms: int,
    update_ms: int | None,
    start: int,
) -> None:
    sender = TelephoneEventSender(
        rate,
        packet_interval_ms=ptime,
        tone_ms=tone_ms,
        pause_ms=pause_ms,
        update_interval_ms=update_ms,
    )
    sender.queue(digits)
    step = rate * ptime // 1000
    sent = run_sender(sender, 2000, start_ts=start, step=step)
    assert not sender.busy and sender.pending == 0
    events: list[list[tuple[int, EventPacket]]] = []
    for tick, packet in sent:
        if packet.marker:
            events.append([])
        events[-1].append((tick, packet))
    assert "".join(str(group[0][1].event.digit) for group in events) == digits
    tone = min(round(tone_ms * rate / 1000), 0xFFFF)
    for group in events:
        packets = [p for _, p in group]
        assert len({p.timestamp for p in packets}) == 1
        assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
        assert [p.event.end for p in packets[-3:]] == [True] * 3
        assert not any(p.event.end for p in packets[:-3])
        assert all(p.event.duration == tone for p in packets[-3:])
        durations = [p.event.duration for p in packets]
        assert durations == sorted(durations) and durations[0] > 0
        ticks = [t for t, _ in group]
        assert ticks[-3:] == [ticks[-3], ticks[-3] + 1, ticks[-3] + 2]
        # the tone lasts as long as asked (to within one packet interval)
        assert (ticks[-3] - ticks[0] + 1) * step >= tone
        assert (ticks[-3] - ticks[0]) * step < tone + step


@given(DIGITS, st.data())
@settings(max_examples=150, deadline=None)
def test_receiver_gets_every_digit_despite_loss_and_duplicates(
    digits: str, data: st.DataObject
) -> None:
    packets = sender_packets(digits)
    delivered = []
    for i, packet in enumerate(packets):
        is_last_end = i + 1 == len(packets) or packets[i + 1].marker
        # drop anything except the last end packet of each event; duplicate some
        if is_last_end or not data.draw(st.booleans(), label=f"drop {i}"):
            delivered.append(packet)
            if data.draw(st.booleans(), label=f"dup {i}"):
                delivered.append(packet)
    assert "".join(str(d) for d in feed(TelephoneEventReceiver(), delivered)) == digits
