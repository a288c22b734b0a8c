"""The replay state machine, tested exhaustively with hypothesis, and the wire shapes' round trips.

A "program" is the sequence of commands a handler issues: (entry kind, name) pairs. The tests run
programs against journals through ``Replay`` exactly as the SDK does: a recorded entry means
"use it", ``None`` means "execute and journal it".
"""

from collections import Counter
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from handler_sdk import NondeterminismError
from handler_sdk._replay import Replay
from handler_sdk.protocol import (
    COMPLETABLE_KINDS,
    Ack,
    Awakeable,
    Call,
    Cancel,
    ClearAllState,
    ClearState,
    Command,
    CompleteAwakeable,
    CompletePromise,
    Completion,
    Discovery,
    End,
    Entry,
    Failure,
    GetPromise,
    GetState,
    GetStateKeys,
    HandlerSpec,
    Heartbeat,
    Input,
    Now,
    Output,
    PeekPromise,
    RetrySpec,
    Run,
    Send,
    ServiceSpec,
    SetState,
    Sleep,
    Start,
    Suspend,
    TimeoutSpec,
    encoder,
    entry_decoder,
    entry_name,
    to_handler_decoder,
    to_sidecar_decoder,
)

NAMED = [Run, GetState, SetState, ClearState, GetPromise, PeekPromise, CompletePromise]
UNNAMED = [ClearAllState, GetStateKeys, Now, Sleep, Awakeable, CompleteAwakeable]
CALLS = [Call, Send]  # named "service/handler"
Cmd = tuple[type, str]

names = st.sampled_from(["a", "b", "audit"])  # few names, so that programs collide often
targets = st.sampled_from(["S/a", "S/b", "O/a"])
payloads = st.binary(max_size=6)
texts = st.text(max_size=8)
failures = st.builds(Failure, code=st.integers(100, 599), message=texts, terminal=st.booleans())
costs = st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False)
commands: st.SearchStrategy[Cmd] = st.one_of(
    st.tuples(st.sampled_from(NAMED), names), st.tuples(st.sampled_from(UNNAMED), st.just("")),
    st.tuples(st.sampled_from(CALLS), targets),
)
keys = st.none() | st.sampled_from(["k1", "k2"])
programs = st.lists(commands, max_size=12)


def entries_for(kind: type, name: str) -> st.SearchStrategy[Entry]:
    """Entries of ``kind`` named ``name``, with arbitrary payloads."""
    if kind is Run:
        return st.builds(Run, name=st.just(name), value=payloads, cost=costs) | st.builds(
            Run, name=st.just(name), failure=failures, cost=costs)
    if kind is GetState:
        return st.builds(GetState, name=st.just(name), value=st.none() | payloads)
    if kind is SetState:
        return st.builds(SetState, name=st.just(name), value=payloads)
    if kind is ClearState:
        return st.just(ClearState(name=name))
    if kind is ClearAllState:
        return st.just(ClearAllState())
    if kind is GetStateKeys:
        return st.builds(GetStateKeys, keys=st.lists(texts, max_size=3))
    if kind is Sleep:  # done or not: replay matches a completable entry whatever its progress
        return st.builds(Sleep, wake_at_ms=st.integers(-(2**53), 2**53), done=st.booleans())
    if kind is Awakeable:
        return st.builds(Awakeable, id=texts, done=st.booleans(), value=st.none() | payloads,
                         failure=st.none() | failures)
    if kind is CompleteAwakeable:
        return st.builds(CompleteAwakeable, id=texts, value=payloads) | st.builds(
            CompleteAwakeable, id=texts, failure=failures)
    if kind is Call:  # the key and input are not matched on replay: only service/handler are
        service, handler = name.split("/")
        return st.builds(Call, service=st.just(service), handler=st.just(handler), key=keys, input=payloads,
                         invocation_id=texts, done=st.booleans(), value=st.none() | payloads,
                         failure=st.none() | failures)
    if kind is Send:
        service, handler = name.split("/")
        return st.builds(Send, service=st.just(service), handler=st.just(handler), key=keys, input=payloads,
                         delay_ms=st.integers(0, 2**40), invocation_id=texts)
    if kind in (GetPromise, PeekPromise):
        return st.builds(kind, name=st.just(name), done=st.booleans(), value=st.none() | payloads,
                         failure=st.none() | failures)
    if kind is CompletePromise:
        return st.builds(CompletePromise, name=st.just(name), value=payloads, done=st.booleans(),
                         outcome=st.none() | failures) | st.builds(
            CompletePromise, name=st.just(name), failure=failures, done=st.booleans())
    return st.builds(Now, ms=st.integers(0, 2**53))


step_entries = commands.flatmap(lambda c: entries_for(*c))
any_entries = step_entries | st.builds(Input, value=payloads) | st.builds(
    Output, value=st.none() | payloads, failure=st.none() | failures)
journals = st.lists(step_entries, max_size=12).map(lambda rest: [Input(value=b"0"), *rest])


def fresh_entry(kind: type, name: str) -> Entry:
    target = dict(zip(("service", "handler"), name.split("/"))) if kind in CALLS else {}
    fresh: dict[type, Callable[[], Entry]] = {
        Call: lambda: Call(**target, input=b"1"), Send: lambda: Send(**target, delay_ms=5),
        GetPromise: lambda: GetPromise(name=name), PeekPromise: lambda: PeekPromise(name=name),
        CompletePromise: lambda: CompletePromise(name=name, value=b"1"),
        Run: lambda: Run(name=name, value=b"1"), GetState: lambda: GetState(name=name),
        SetState: lambda: SetState(name=name, value=b"1"), ClearState: lambda: ClearState(name=name),
        ClearAllState: ClearAllState, GetStateKeys: GetStateKeys, Now: lambda: Now(ms=1),
        Sleep: lambda: Sleep(wake_at_ms=1), Awakeable: lambda: Awakeable(id="awk_x"),
        CompleteAwakeable: lambda: CompleteAwakeable(id="awk_y", value=b"1"),
    }
    return fresh[kind]()


def attempt(program: list[Cmd], journal: list[Entry], executed: Counter[int],
            crash_after: int | None = None) -> list[Entry]:
    """Run ``program`` against ``journal`` as one attempt; it may crash after some new entries.

    Returns the journal the sidecar holds afterwards; ``executed`` counts runs per index.
    """
    replay = Replay("inv_x", journal)
    grown = list(journal)
    for kind, name in program:
        if crash_after is not None and len(grown) - len(journal) >= crash_after:
            return grown
        index, recorded = replay.step(kind, name)
        if recorded is None:
            assert index == len(grown), "a new entry always lands at the end of the journal"
            if kind is Run:
                executed[index] += 1
            grown.append(fresh_entry(kind, name))
        else:
            assert recorded is journal[index]
    replay.finish()
    return grown


@given(programs, st.lists(st.integers(0, 4), max_size=6))
def test_crashing_attempts_resume_and_run_each_step_exactly_once(program: list[Cmd], crashes: list[int]) -> None:
    executed: Counter[int] = Counter()
    journal: list[Entry] = [Input(value=b"0")]
    for crash_after in crashes:  # each attempt takes a few new steps, then the process dies
        journal = attempt(program, journal, executed, crash_after)
    journal = attempt(program, journal, executed)  # the last attempt runs to the end
    assert [(type(e), entry_name(e)) for e in journal[1:]] == program
    run_indices = [i + 1 for i, (kind, _) in enumerate(program) if kind is Run]
    assert executed == Counter(run_indices)  # every step once: never again once journaled
    assert attempt(program, journal, executed) == journal  # a full replay executes nothing
    assert executed == Counter(run_indices)


@given(programs.filter(bool), st.data())
def test_any_divergence_in_kind_or_name_raises(program: list[Cmd], data: st.DataObject) -> None:
    journal = attempt(program, [Input(value=b"0")], Counter())
    at = data.draw(st.integers(0, len(program) - 1), label="diverge at")
    changed = data.draw(commands.filter(lambda c: c != program[at]), label="changed command")
    mutated = [*program[:at], changed, *data.draw(programs, label="then")]
    executed: Counter[int] = Counter()
    with pytest.raises(NondeterminismError) as raised:
        attempt(mutated, journal, executed)
    error = raised.value
    assert (error.invocation_id, error.index) == ("inv_x", at + 1)
    assert changed[0].__name__ in error.expected and type(journal[at + 1]).__name__ in error.recorded
    # Both names too: a call names its "service/handler".
    assert not changed[1] or repr(changed[1]) in error.expected
    assert not program[at][1] or repr(program[at][1]) in error.recorded
    assert f"journal entry {at + 1}" in str(error)
    assert not executed  # nothing before the divergence ran again, nothing after it ran at all


@given(journals, programs)
def test_arbitrary_journals_against_arbitrary_programs(journal: list[Entry], program: list[Cmd]) -> None:
    """The whole decision table, against an independent model of the rule."""
    recorded = [(type(e), entry_name(e)) for e in journal[1:]]
    mismatch = next((i for i, (c, r) in enumerate(zip(program, recorded)) if c != r), None)
    if mismatch is None and len(program) < len(recorded):
        mismatch = len(program)  # the code ended while recorded steps remained
    executed: Counter[int] = Counter()
    if mismatch is not None:
        with pytest.raises(NondeterminismError) as raised:
            attempt(program, journal, executed)
        assert raised.value.index == mismatch + 1 and not executed
    else:
        grown = attempt(program, journal, executed)
        assert grown[: len(journal)] == journal and len(grown) == len(program) + 1
        new_runs = [i + 1 for i, (k, _) in enumerate(program) if k is Run and i + 1 >= len(journal)]
        assert executed == Counter(new_runs)


@given(programs, st.data())
def test_completing_entries_in_place_keeps_replays_matching(program: list[Cmd], data: st.DataObject) -> None:
    """The sidecar marks a timer or awakeable done by rewriting its entry: replays match either way."""
    journal = attempt(program, [Input(value=b"0")], Counter())
    completable = [i for i, entry in enumerate(journal) if isinstance(entry, COMPLETABLE_KINDS)]
    done = data.draw(st.sets(st.sampled_from(completable)) if completable else st.just(set()), label="done")
    rewritten = [msgspec.structs.replace(e, done=True) if i in done else e for i, e in enumerate(journal)]
    executed: Counter[int] = Counter()
    assert attempt(program, rewritten, executed) == rewritten and not executed


def test_a_trailing_output_is_not_a_step() -> None:
    journal: list[Entry] = [Input(value=b""), Run(name="a", value=b"1"), Output(value=b"1")]
    replay = Replay("inv_x", journal)
    assert replay.peek() is journal[1] and replay.journal is journal
    assert replay.replaying and replay.step(Run, "a") == (1, journal[1])
    assert replay.peek() is journal[2]  # the Output: the handler is at its end
    replay.finish()
    assert Replay("inv_x", [Input(value=b"")]).next_index == 1


# --- wire round trips -----------------------------------------------------------------------------

inv_ids = st.text(min_size=1, max_size=10)
to_handler = st.one_of(
    st.builds(Start, invocation_id=inv_ids, attempt=st.integers(1, 100), service=texts, handler=texts,
              key=st.none() | texts, input=payloads, headers=st.dictionaries(texts, texts, max_size=2),
              journal=st.lists(any_entries, max_size=4),
              state=st.none() | st.dictionaries(texts, payloads, max_size=3), seed=st.integers(0, 2**63)),
    st.builds(Ack, invocation_id=inv_ids, index=st.integers(0, 2**31)),
    st.builds(Completion, invocation_id=inv_ids, index=st.integers(1, 2**31), value=st.none() | payloads,
              failure=st.none() | failures),
    st.builds(Cancel, invocation_id=inv_ids, kill=st.booleans()),
)
to_sidecar = st.one_of(
    st.builds(Command, invocation_id=inv_ids, index=st.integers(1, 2**31), entry=any_entries),
    st.builds(Heartbeat, invocation_id=inv_ids),
    st.builds(Suspend, invocation_id=inv_ids, waiting_on=st.lists(st.integers(1, 2**31), max_size=4)),
    st.builds(End, invocation_id=inv_ids, output=st.none() | payloads, failure=st.none() | failures),
)


@given(any_entries)
def test_every_entry_round_trips(entry: Entry) -> None:
    assert entry_decoder.decode(encoder.encode(entry)) == entry


@given(to_handler)
def test_every_message_to_the_handler_round_trips(message: object) -> None:
    assert to_handler_decoder.decode(encoder.encode(message)) == message


@given(to_sidecar)
def test_every_message_to_the_sidecar_round_trips(message: object) -> None:
    assert to_sidecar_decoder.decode(encoder.encode(message)) == message


@given(st.builds(Discovery, protocol=st.just(1), services=st.lists(st.builds(
    ServiceSpec, name=texts, kind=st.sampled_from(["service", "object", "workflow"]),
    handlers=st.lists(st.builds(
        HandlerSpec, name=texts, kind=st.sampled_from(["exclusive", "shared", "workflow"]),
        retry=st.builds(RetrySpec, initial_interval_ms=st.none() | st.integers(0, 10**6),
                        max_attempts=st.none() | st.integers(1, 100)),
        timeouts=st.builds(TimeoutSpec, inactivity_ms=st.none() | st.integers(0, 10**6),
                           total_ms=st.none() | st.integers(0, 10**9))),
        max_size=3)), max_size=3)))
def test_discovery_round_trips_as_json(discovery: Discovery) -> None:
    assert msgspec.json.decode(msgspec.json.encode(discovery), type=Discovery) == discovery


# Saved frames: bytes a version-1 peer produced. If these stop decoding to the same messages,
# the wire format changed and older peers would break.
SAVED_FRAMES = {
    "84a174a7436f6d6d616e64ad696e766f636174696f6e5f6964a5696e765f31a5696e64657802a5656e74727983a174a3"
    "52756ea46e616d65a56175646974a576616c7565c4023530":
        Command(invocation_id="inv_1", index=2, entry=Run(name="audit", value=b"50")),
    "8ba174a55374617274ad696e766f636174696f6e5f6964a5696e765f31a7617474656d707401a773657276696365a743"
    "6f756e746572a768616e646c6572a3616464a36b6579a16ba5696e707574c40135a76865616465727380a76a6f75726e"
    "616c9282a174a5496e707574a576616c7565c4013583a174a84765745374617465a46e616d65a5636f756e74a576616c"
    "7565c40133a5737461746581a5636f756e74c40133a47365656407":
        Start(invocation_id="inv_1", attempt=1, service="Counter", handler="add", key="k", input=b"5",
              headers={}, journal=[Input(value=b"5"), GetState(name="count", value=b"3")],
              state={"count": b"3"}, seed=7),
    "85a174aa436f6d706c6574696f6ead696e766f636174696f6e5f6964a5696e765f31a5696e64657803a576616c7565c402"
    "3432a76661696c757265c0":
        Completion(invocation_id="inv_1", index=3, value=b"42"),
    "83a174a753757370656e64ad696e766f636174696f6e5f6964a5696e765f31aa77616974696e675f6f6e920103":
        Suspend(invocation_id="inv_1", waiting_on=[1, 3]),
    "84a174a7436f6d6d616e64ad696e766f636174696f6e5f6964a5696e765f31a5696e64657801a5656e74727982a174a5"
    "536c656570aa77616b655f61745f6d73cf0000018bcfe5687b":
        Command(invocation_id="inv_1", index=1, entry=Sleep(wake_at_ms=1_700_000_000_123)),
    "84a174a7436f6d6d616e64ad696e766f636174696f6e5f6964a5696e765f31a5696e64657802a5656e74727982a174a9"
    "4177616b6561626c65a26964ad61776b5f696e765f315f325f73":
        Command(invocation_id="inv_1", index=2, entry=Awakeable(id="awk_inv_1_2_s")),
    "84a174a7436f6d6d616e64ad696e766f636174696f6e5f6964a5696e765f31a5696e64657803a5656e74727984a174a4"
    "43616c6ca773657276696365a747726565746572a768616e646c6572a568656c6c6fa5696e707574c40522626f6222":
        Command(invocation_id="inv_1", index=3, entry=Call(service="Greeter", handler="hello", input=b'"bob"')),
    "84a174a7436f6d6d616e64ad696e766f636174696f6e5f6964a5696e765f31a5696e64657804a5656e74727983a174af"
    "436f6d706c65746550726f6d697365a46e616d65a8617070726f76616ca576616c7565c40131":
        Command(invocation_id="inv_1", index=4, entry=CompletePromise(name="approval", value=b"1")),
    "83a174a643616e63656cad696e766f636174696f6e5f6964a5696e765f31a46b696c6cc2":
        Cancel(invocation_id="inv_1"),
}


#: Saved frames this version writes differently, though with the same meaning: a ``Start`` has more
#: than 15 fields now, so msgspec heads it with a map16 (``de 00 0b``) where a fixmap (``8b``) did,
#: and a ``Completion`` leaves out its default ``failure`` (``omit_defaults``). Every msgpack
#: decoder reads both forms, which the round trip below holds.
REWRITTEN_FRAMES = {Start, Completion}


@pytest.mark.parametrize("frame", list(SAVED_FRAMES))
def test_saved_frames_still_decode(frame: str) -> None:
    expected = SAVED_FRAMES[frame]
    decoder = to_handler_decoder if isinstance(expected, (Start, Completion, Cancel)) else to_sidecar_decoder
    assert decoder.decode(bytes.fromhex(frame)) == expected
    written = encoder.encode(expected)
    assert decoder.decode(written) == expected
    if type(expected) not in REWRITTEN_FRAMES:
        assert written.hex() == frame
