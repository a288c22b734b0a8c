"""The ledger checker fails on what it is there to catch: hand-made evidence of one add, first
as a correct run leaves it, then with one thing wrong at a time."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.cluster.ledger import Acked, Call, Enter, Evidence, InvariantViolated, LedgerLine, Leave, Pause, Run, check

INVOCATION = "inv_01M8ZPCVXM00SHN9KW4H839K02"
LATER = "inv_01M8ZPCVXM2TX4TKZYJS49TXHP"


def _run(at: float, *, invocation: str = INVOCATION, index: int = 1, completed: bool = True) -> Run:
    return Run(invocation=invocation, key="k", step="add", attempt=f"a{at}", idempotency_key=f"{invocation}:{index}",
               started=at, ended=at + 0.1, completed=completed)


def _acked(at: float, value: Any = 5, invocation: str = INVOCATION) -> Acked:
    return Acked(invocation=invocation, key="k", step="add", attempt=f"a{at}", value=value, at=at)


def _held(invocation: str, entered: float, left: float, outcome: str = "returned") -> list[LedgerLine]:
    attempt = f"{invocation}@{entered}"
    return [Enter(invocation=invocation, service="LedgerCounter", key="k", attempt=attempt, at=entered),
            Leave(invocation=invocation, service="LedgerCounter", key="k", attempt=attempt, at=left, outcome=outcome)]


def _journal(value: int) -> dict[str, Any]:
    return {"status": "completed", "output": value,
            "journal": [{"index": 0, "kind": "Input"}, {"index": 1, "kind": "Run", "name": "add", "value": value},
                        {"index": 2, "kind": "Output"}]}


def _evidence(ledger: list[LedgerLine], **changes: Any) -> Evidence:
    good = Evidence(
        ledger=ledger,
        calls=[Call(service="LedgerCounter", key="k", handler="add", argument=5, idempotency_key="add-0", expected=5,
                    invocation=INVOCATION, output=5, answered=True, tries=1)],
        journals={INVOCATION: _journal(5)}, values={"k": 5}, kills=1)
    return msgspec.structs.replace(good, **changes)


#: A kill cut the first run of the step short; the second run was acknowledged and journaled.
GOOD = [*_held(INVOCATION, 1.0, 1.2, "cut"), _run(1.1, completed=False),
        *_held(INVOCATION, 2.0, 2.5), _run(2.1), _acked(2.3)]


def test_a_run_that_keeps_every_invariant_passes() -> None:
    check(_evidence(GOOD))


@pytest.mark.parametrize(("ledger", "changes", "complaint"), [
    pytest.param([*GOOD, _run(2.4)], {}, "ran again at 2.400, after its acknowledgement at 2.300",
                 id="a step run again after its ack"),
    pytest.param(GOOD, {"journals": {INVOCATION: {**_journal(5), "journal": [{"index": 0, "kind": "Input"}]}}},
                 "acknowledged at 2.300, but is not in its final journal", id="an acked step missing from the journal"),
    pytest.param([*GOOD[:-1], _acked(2.3, value=6)], {}, "acknowledged with 6, but its final journal holds 5",
                 id="an acked value the journal does not hold"),
    pytest.param([*GOOD, _run(1.5, completed=False)], {}, "ran 3 times in a run with 1 kills",
                 id="more runs than kills"),
    pytest.param([_run(1.1, index=2, completed=False), *GOOD[1:]], {}, "ran under several idempotency keys",
                 id="a rerun under another idempotency key"),
    pytest.param(GOOD, {"values": {"k": 10}}, "holds 10, but its adds sum to 5", id="a counter off its adds"),
    pytest.param(GOOD, {"kills": 0}, "ran 2 times in a run with 0 kills", id="a rerun without a kill"),
    pytest.param([*GOOD, *_held(LATER, 2.2, 2.6)], {"journals": {INVOCATION: _journal(5), LATER: _journal(5)}},
                 "entered at 2.200 while", id="two invocations of one key at once"),
    pytest.param([*GOOD, _run(3.0, invocation=LATER)], {}, f"invocation {LATER} ran steps, but no call",
                 id="an invocation no call made"),
])
def test_a_run_that_breaks_an_invariant_fails_saying_which(
    ledger: list[LedgerLine], changes: dict[str, Any], complaint: str,
) -> None:
    with pytest.raises(InvariantViolated, match=complaint.replace("(", r"\(")):
        check(_evidence(ledger, **changes))


def test_arrival_order_is_checked_per_key() -> None:
    second = Call(service="LedgerCounter", key="k", handler="add", argument=1, idempotency_key="add-1", expected=6,
                  invocation=LATER, output=6, answered=True, tries=1)
    ran_first = [*_held(LATER, 0.5, 0.9), *GOOD]
    evidence = _evidence(ran_first, journals={INVOCATION: _journal(5), LATER: _journal(6)}, values={"k": 6})
    evidence.calls.append(second)
    with pytest.raises(InvariantViolated, match=f"{LATER} \\(call 1\\) ran before {INVOCATION}"):
        check(evidence)


def test_an_acknowledgement_after_a_takeover_must_be_in_the_new_owners_journal() -> None:
    pause = Pause(node="node-2", partitions=frozenset({0}), stopped_at=1.5, taken_over_at=1.8)
    late = [*GOOD, _acked(2.4, value=7)]
    with pytest.raises(InvariantViolated, match="after node-2 was paused and its partitions taken over"):
        check(_evidence(late, pauses=[pause]))
    check(_evidence([*GOOD, _acked(2.4)], pauses=[pause]))  # the new owner journaled it: allowed
