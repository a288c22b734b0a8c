"""What must hold after a workload ran through crashes, checked against what the outside world saw.

The evidence is of three kinds, none of them the sidecar's own word alone: the **ledger** the
handler service wrote from inside each step and right after each acknowledgement
(``ledger_service.py``), the **calls** as the client saw them answered, and the **final
journals** (``GET /invocations/{id}``) and values read back once everything settled. Each check
returns the violations it found as sentences; :func:`check` runs them all and fails with every
sentence at once, so a broken run says everything that went wrong, not only the first thing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from sidecar.ids import partition_of_id


class Run(msgspec.Struct, frozen=True, tag="run", tag_field="kind"):
    """One execution of a step's body, written as the body ended (``completed``: it returned)."""

    invocation: str
    key: str
    step: str
    #: The handler attempt that ran it (a token the handler drew: the SDK does not number attempts).
    attempt: str
    #: ``ctx.idempotency_key()`` inside the body: ``"{invocation}:{journal index}"``.
    idempotency_key: str
    started: float
    ended: float
    completed: bool


class Acked(msgspec.Struct, frozen=True, tag="acked", tag_field="kind"):
    """``ctx.run`` returned: the step's entry is durable (or was replayed from the journal)."""

    invocation: str
    key: str
    step: str
    attempt: str
    value: Any
    at: float


class Enter(msgspec.Struct, frozen=True, tag="enter", tag_field="kind"):
    """An attempt of an exclusive handler began."""

    invocation: str
    service: str
    key: str
    attempt: str
    at: float


class Leave(msgspec.Struct, frozen=True, tag="leave", tag_field="kind"):
    """An attempt of an exclusive handler ended: ``returned``, or ``cut`` (cancelled or failed)."""

    invocation: str
    service: str
    key: str
    attempt: str
    at: float
    outcome: str


LedgerLine = Run | Acked | Enter | Leave

_LINE = msgspec.json.Decoder(LedgerLine)


def read_ledger(path: Path) -> list[LedgerLine]:
    """Every line of the ledger, in the order written (no ledger yet: none)."""
    if not path.exists():
        return []
    return [_LINE.decode(line) for line in path.read_bytes().splitlines() if line]


class Call(msgspec.Struct, kw_only=True):
    """One request of the workload, filled in by the client once it was answered."""

    service: str
    key: str
    handler: str
    argument: Any
    idempotency_key: str
    #: The output the call must end with.
    expected: Any
    invocation: str | None = None
    output: Any = None
    answered: bool = False
    #: How many requests it took (retries after 503s and dropped connections included).
    tries: int = 0


class Pause(msgspec.Struct, frozen=True):
    """A node stopped (SIGSTOP) past its lease: the partitions it served, when it stopped, and
    when another node had taken all of them."""

    node: str
    partitions: frozenset[int]
    stopped_at: float
    taken_over_at: float


class Evidence(msgspec.Struct, kw_only=True):
    ledger: list[LedgerLine]
    calls: list[Call]
    #: ``GET /invocations/{id}`` of every invocation the calls and the ledger name.
    journals: dict[str, dict[str, Any]]
    #: ``LedgerCounter.value`` of every key the workload added to, read at the end.
    values: dict[str, int]
    #: The faults during the run that may cut a running step (SIGKILLs of sidecars and of NATS
    #: servers), and the pauses past the lease.
    kills: int
    pauses: list[Pause] = []


class InvariantViolated(AssertionError):
    """What the run got wrong, one line per violation."""


#: How many violations of one kind a failure lists (a systematic bug repeats itself).
_SHOWN = 8


def check(evidence: Evidence) -> None:
    """Raise :class:`InvariantViolated` listing every violation of every invariant."""
    problems: list[str] = []
    for invariant in INVARIANTS:
        found = invariant(evidence)
        problems += [f"{invariant.__name__}: {p}" for p in found[:_SHOWN]]
        if len(found) > _SHOWN:
            problems.append(f"{invariant.__name__}: ... and {len(found) - _SHOWN} more")
    if problems:
        raise InvariantViolated("\n".join(problems))


def every_call_completed_with_its_output(e: Evidence) -> list[str]:
    problems = []
    for call in e.calls:
        where = f"{call.service}/{call.key}/{call.handler}({call.argument!r}) [{call.idempotency_key}]"
        if not call.answered or call.invocation is None:
            problems.append(f"{where} was never answered (after {call.tries} tries)")
            continue
        if call.output != call.expected:
            problems.append(f"{where} answered {call.output!r}, expected {call.expected!r}")
        shown = e.journals.get(call.invocation)
        if shown is None:
            problems.append(f"{where}: its invocation {call.invocation} is unknown to the admin API")
        elif shown.get("status") != "completed" or shown.get("output") != call.expected:
            problems.append(f"{where}: {call.invocation} is {shown.get('status')!r} with output "
                            f"{shown.get('output')!r}, expected completed with {call.expected!r}")
    return problems


def counters_equal_the_accepted_adds(e: Evidence) -> list[str]:
    problems = []
    adds: dict[str, list[Call]] = defaultdict(list)
    for call in e.calls:
        if call.service == "LedgerCounter" and call.handler == "add":
            adds[call.key].append(call)
    for key, calls in adds.items():
        total = sum(call.argument for call in calls)
        if e.values.get(key) != total:
            problems.append(f"LedgerCounter/{key} holds {e.values.get(key)!r}, but its adds sum to {total}")
        invocations = [call.invocation for call in calls]
        if len(set(invocations)) != len(invocations):
            problems.append(f"LedgerCounter/{key}: distinct adds share an invocation: {invocations}")
    return problems


def every_invocation_was_called(e: Evidence) -> list[str]:
    """Nothing ran that no call accounts for (a retried request must find its invocation)."""
    called = {call.invocation for call in e.calls}
    stray = sorted({line.invocation for line in e.ledger} - called)
    return [f"invocation {i} ran steps, but no call was answered with it" for i in stray]


def no_acknowledged_step_ran_again(e: Evidence) -> list[str]:
    acked_at: dict[tuple[str, str], float] = {}
    for line in e.ledger:
        if isinstance(line, Acked):
            acked_at.setdefault((line.invocation, line.step), line.at)
    return [f"{run.invocation} {run.step} ran again at {run.started:.3f}, after its acknowledgement at "
            f"{acked_at[run.invocation, run.step]:.3f} (idempotency key {run.idempotency_key})"
            for run in _runs(e.ledger) if run.started > acked_at.get((run.invocation, run.step), float("inf"))]


def acknowledged_steps_are_in_the_final_journal(e: Evidence) -> list[str]:
    return [problem for line in e.ledger if isinstance(line, Acked)
            if (problem := _journaled_as_acked(e, line)) is not None]


def unacknowledged_steps_ran_at_most_once_per_disruption(e: Evidence) -> list[str]:
    """A step runs once, plus at most once more per kill or pause (the run cut by it), always
    under the one idempotency key of its journal entry; and every journaled step really ran."""
    problems = []
    disruptions = e.kills + len(e.pauses)
    runs: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in _runs(e.ledger):
        runs[run.invocation, run.step].append(run)
    for (invocation, step), executions in runs.items():
        if len(executions) > 1 + disruptions:
            problems.append(f"{invocation} {step} ran {len(executions)} times in a run with {e.kills} kills "
                            f"and {len(e.pauses)} pauses")
        keys = {run.idempotency_key for run in executions}
        if len(keys) != 1:
            problems.append(f"{invocation} {step} ran under several idempotency keys: {sorted(keys)}")
        for key in keys:
            entry = _entry_at(e, key)
            if entry is None or entry.get("kind") != "Run" or entry.get("name") != step:
                problems.append(f"{invocation} {step} ran with idempotency key {key}, but the final journal's "
                                f"entry there is {entry!r}")
    for invocation, shown in e.journals.items():
        for entry in shown.get("journal", []):
            if entry.get("kind") == "Run" and not any(
                    run.completed for run in runs.get((invocation, entry["name"]), [])):
                problems.append(f"{invocation} journaled step {entry['name']!r} that no execution completed")
    return problems


def exclusive_invocations_never_overlap_and_keep_their_order(e: Evidence) -> list[str]:
    """Per key: attempts that returned never overlap another invocation's, and invocations of
    calls made one after another run in that order. An attempt a pause cut off is left out: its
    node was fenced, and nothing it did after the takeover counts (checked apart, below)."""
    problems = []
    attempts = [a for a in _attempts(e.ledger) if a.outcome == "returned" and not _cut_by_pause(e, a)]
    by_key: dict[tuple[str, str], list[_Attempt]] = defaultdict(list)
    for attempt in attempts:
        by_key[attempt.key].append(attempt)
    for key, held in by_key.items():
        held.sort(key=lambda a: a.entered)
        for i, first in enumerate(held):
            for second in held[i + 1:]:
                if second.entered >= first.left:
                    break
                if second.invocation != first.invocation:
                    problems.append(f"{'/'.join(key)}: {second.invocation} entered at {second.entered:.3f} while "
                                    f"{first.invocation} held it ({first.entered:.3f}-{first.left:.3f})")
    for key, calls in _calls_by_key(e.calls).items():
        spans = {i: [a for a in by_key.get(key, []) if a.invocation == i] for i in (c.invocation for c in calls)}
        for earlier, later in zip(calls, calls[1:]):
            before, after = spans.get(earlier.invocation, []), spans.get(later.invocation, [])
            if before and after and max(a.left for a in before) > min(a.entered for a in after):
                problems.append(f"{'/'.join(key)}: {later.invocation} (call {later.argument!r}) ran before "
                                f"{earlier.invocation} (call {earlier.argument!r}) had finished")
    return problems


def a_paused_node_acknowledged_nothing_after_the_takeover(e: Evidence) -> list[str]:
    """An acknowledgement a node gave after another took its partitions is only allowed if the
    new owner's journal holds that very entry (the append had landed in the log before the pause)."""
    problems = []
    for pause in e.pauses:
        for line in e.ledger:
            if (isinstance(line, Acked) and line.at > pause.taken_over_at
                    and partition_of_id(line.invocation) in pause.partitions
                    and (problem := _journaled_as_acked(e, line)) is not None):
                problems.append(f"after {pause.node} was paused and its partitions taken over: {problem}")
    return problems


INVARIANTS: list[Callable[[Evidence], list[str]]] = [
    every_call_completed_with_its_output,
    counters_equal_the_accepted_adds,
    every_invocation_was_called,
    no_acknowledged_step_ran_again,
    acknowledged_steps_are_in_the_final_journal,
    unacknowledged_steps_ran_at_most_once_per_disruption,
    exclusive_invocations_never_overlap_and_keep_their_order,
    a_paused_node_acknowledged_nothing_after_the_takeover,
]


class _Attempt(msgspec.Struct, frozen=True):
    invocation: str
    #: The object and key it held.
    key: tuple[str, str]
    entered: float
    #: When it left (infinity: never, as far as the ledger tells).
    left: float
    outcome: str


def _attempts(ledger: Iterable[LedgerLine]) -> list[_Attempt]:
    entered: dict[str, Enter] = {}
    left: dict[str, Leave] = {}
    for line in ledger:
        if isinstance(line, Enter):
            entered[line.attempt] = line
        elif isinstance(line, Leave):
            left[line.attempt] = line
    return [_Attempt(invocation=enter.invocation, key=(enter.service, enter.key), entered=enter.at,
                     left=left[token].at if token in left else float("inf"),
                     outcome=left[token].outcome if token in left else "unknown")
            for token, enter in entered.items()]


def _cut_by_pause(e: Evidence, attempt: _Attempt) -> bool:
    return any(partition_of_id(attempt.invocation) in pause.partitions and attempt.entered < pause.taken_over_at
               and attempt.left > pause.stopped_at for pause in e.pauses)


def _calls_by_key(calls: list[Call]) -> dict[tuple[str, str], list[Call]]:
    """Calls to each object key, in the order they were made (one after another: the workload
    waits for a key's call to be answered before making its next)."""
    by_key: dict[tuple[str, str], list[Call]] = defaultdict(list)
    for call in calls:
        by_key[call.service, call.key].append(call)
    return by_key


def _runs(ledger: Iterable[LedgerLine]) -> list[Run]:
    return [line for line in ledger if isinstance(line, Run)]


def _entry_at(e: Evidence, idempotency_key: str) -> dict[str, Any] | None:
    """The final journal's entry that ``"{invocation}:{index}"`` names (None: there is none)."""
    invocation, _, index = idempotency_key.rpartition(":")
    journal = e.journals.get(invocation, {}).get("journal", [])
    position = int(index) if index.isdigit() else -1
    entry: dict[str, Any] | None = journal[position] if 0 <= position < len(journal) else None
    return entry


def _journaled_as_acked(e: Evidence, line: Acked) -> str | None:
    """Why the final journal does not hold ``line``'s step with its value (None: it does)."""
    journal = e.journals.get(line.invocation, {}).get("journal", [])
    entries = [entry for entry in journal if entry.get("kind") == "Run" and entry.get("name") == line.step]
    if not entries:
        return f"{line.invocation} {line.step} was acknowledged at {line.at:.3f}, but is not in its final journal"
    if entries[0].get("value") != line.value:
        return (f"{line.invocation} {line.step} was acknowledged with {line.value!r}, but its final journal "
                f"holds {entries[0].get('value')!r}")
    return None
