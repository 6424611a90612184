"""The run loop's pure policies, table-tested: backoff, the gate, agent-event lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factory_cli.backoff import Backoff, backoff_delay
from factory_cli.events import MAX_BATCH, EventsReader, to_event
from factory_cli.gate import Gate, forced_interval


@pytest.mark.parametrize(
    ("failures", "u", "retry_after", "expected"),
    [
        (0, 0.5, None, 0.0),  # no failure, no wait
        (1, 0.0, None, 1.0),  # u=0: the full ceiling
        (1, 0.999999, None, 0.5),  # u->1: half the ceiling, never less
        (2, 0.0, None, 2.0),
        (3, 0.5, None, 3.0),
        (6, 0.0, None, 32.0),
        (7, 0.0, None, 60.0),  # 64 capped at 60
        (7, 0.5, None, 45.0),
        (50, 0.0, None, 60.0),  # no overflow, still capped
        (1000, 0.0, None, 60.0),
        (1, 0.5, 10.0, 10.0),  # Retry-After is a floor...
        (5, 0.0, 3.0, 16.0),  # ...not a ceiling
        (1, 0.0, 600.0, 60.0),  # ...and stays within the cap
    ],
)
def test_backoff_delay_table(
    failures: int, u: float, retry_after: float | None, expected: float
) -> None:
    assert backoff_delay(failures, u, retry_after=retry_after) == pytest.approx(expected, abs=1e-4)


def test_backoff_delay_with_its_own_base_and_cap() -> None:
    delays = [backoff_delay(n, 0.0, base=0.1, cap=1.0) for n in range(1, 7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_jitter_spreads_within_half_and_full() -> None:
    for n in range(1, 12):
        low, high = backoff_delay(n, 0.999999), backoff_delay(n, 0.0)
        assert low == pytest.approx(high / 2, rel=1e-5) and high <= 60


def test_backoff_tracks_consecutive_failures_and_resets() -> None:
    backoff = Backoff(lambda: 0.0)
    assert backoff.ready(0.0)
    assert backoff.failed(100.0) == 1.0 and not backoff.ready(100.5) and backoff.ready(101.0)
    assert backoff.failed(101.0) == 2.0
    assert backoff.failed(103.0, cap=3.0) == 3.0  # a caller's tighter cap (a lease running out)
    backoff.succeeded()
    assert backoff.failures == 0 and backoff.ready(0.0)
    assert backoff.failed(200.0) == 1.0


@pytest.mark.parametrize(("u", "expected"), [(0.0, 30.0), (0.5, 26.25), (0.999999, 22.5)])
def test_gate_forced_interval_is_jittered_but_never_past_max_skip(
    u: float, expected: float
) -> None:
    assert forced_interval(30, u) == pytest.approx(expected, abs=1e-4)


def test_gate_decisions_table() -> None:
    gate = Gate()
    # (polled version, time, claim expected?, claim found a job?)
    script = [
        (5, 0.0, True, False),  # first poll: claim (nothing known)
        (5, 5.0, False, None),  # same version: skip
        (5, 10.0, False, None),
        (6, 15.0, True, True),  # moved: claim, found one
        (6, 16.0, True, False),  # found one: keep claiming at this version
        (6, 20.0, False, None),  # empty at 6: skip
        (6, 40.0, False, None),
        (6, 42.0, True, False),  # 26 s after the last claim (forced at 16 + 26): claim anyway
        (6, 43.0, False, None),
    ]
    for version, now, claim, found in script:
        assert gate.should_claim(version, now) is claim, (version, now)
        if claim:
            gate.claimed(found=bool(found), version=version, now=now, max_skip=30, u=0.534)
    assert (gate.polls, gate.hits, gate.misses, gate.claims, gate.found) == (9, 5, 4, 4, 1)


def test_gate_claims_directly_only_just_after_a_claim_that_found_a_job() -> None:
    gate = Gate()
    assert not gate.claim_directly(0.0, 5.0)  # nothing claimed yet: poll
    gate.claimed(found=True, version=3, now=10.0, max_skip=30, u=0.5)
    assert gate.claim_directly(12.0, 5.0)  # it just saw the queue
    assert not gate.claim_directly(15.0, 5.0)  # a poll interval later: poll first
    gate.claimed(found=False, version=3, now=12.5, max_skip=30, u=0.5)
    assert not gate.claim_directly(12.6, 5.0)  # found nothing: back to the gate
    assert gate.empty_version == 3 and gate.direct == 1


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"type": "decision", "payload": {"a": 1}}', ("decision", {"a": 1})),
        ('{"type": "tool:call/x.y-z", "payload": null}', ("tool:call/x.y-z", None)),
        ('{"type": "note"}', ("note", None)),
        ("plain text", ("engine.invalid", {"line": "plain text"})),
        ("[1, 2]", ("engine.invalid", {"line": "[1, 2]"})),
        ('{"type": "has space"}', ("engine.invalid", {"line": '{"type": "has space"}'})),
        ('{"type": 7}', ("engine.invalid", {"line": '{"type": 7}'})),
        ('{"payload": 1}', ("engine.invalid", {"line": '{"payload": 1}'})),
    ],
)
def test_events_line_to_event(line: str, expected: tuple[str, object]) -> None:
    event = to_event(line, 4)
    assert (event["type"], event["payload"]) == expected and event["seq"] == 4


def test_events_oversized_payload_becomes_a_preview() -> None:
    event = to_event(json.dumps({"type": "big", "payload": "x" * 20000}), 0)
    assert event["payload"]["truncated"] is True and event["payload"]["bytes"] > 20000
    assert len(event["payload"]["preview"]) == 4096


def test_events_reader_numbers_complete_lines_and_batches(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    reader = EventsReader(path)
    assert reader.read() == 0  # no file yet
    path.write_text('{"type": "a"}\n\n{"type": "b"}\n{"type": "c"')
    assert reader.read() == 2 and [e["seq"] for e in reader.pending] == [0, 1]
    with path.open("a") as handle:
        handle.write("}\n" + "".join(f'{{"type": "n{i}"}}\n' for i in range(150)))
    assert reader.read() == 151
    batch = reader.batch()
    assert len(batch) == MAX_BATCH and batch[0]["seq"] == 0
    reader.sent(len(batch))
    assert reader.batch()[0]["seq"] == 100 and reader.sent_count == 100
    reader.sent(len(reader.batch()))
    assert reader.pending == [] and reader.read() == 0


def test_events_batches_stay_under_the_request_size(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    line = json.dumps({"type": "blob", "payload": "y" * 15000})
    path.write_text((line + "\n") * 40)
    reader = EventsReader(path)
    reader.read()
    batch = reader.batch()
    assert 0 < len(batch) < 40 and len(json.dumps(batch)) <= 256 * 1024
