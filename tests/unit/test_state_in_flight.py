"""Writes in flight replayed over a committed state that already holds any prefix of them give
the state after all of them: what the next invocation on a key must see."""

from __future__ import annotations

from hypothesis import given, strategies as st

from handler_sdk.protocol import ClearAllState, ClearState, SetState
from sidecar.invoker.state_in_flight import StateInFlight

names = st.sampled_from(["a", "b", "c"])
writes = st.lists(st.one_of(
    st.builds(SetState, names, st.binary(max_size=2)), st.builds(ClearState, names), st.just(ClearAllState()),
), max_size=10)
states = st.dictionaries(names, st.binary(max_size=2))


def _apply(state: dict[str, bytes], ops: list) -> dict[str, bytes]:
    state = dict(state)
    for op in ops:
        if isinstance(op, SetState):
            state[op.name] = op.value
        elif isinstance(op, ClearState):
            state.pop(op.name, None)
        else:
            state.clear()
    return state


KEY = ("Counter", "k")


@given(states, writes, st.data())
def test_overlay_over_any_committed_prefix_is_the_final_state(base, ops, data) -> None:
    committed = data.draw(st.integers(0, len(ops)), label="committed")
    in_flight = StateInFlight()
    for op in ops:
        in_flight.add(KEY, op)
    for _ in range(committed):
        in_flight.settled(KEY)
    expected = _apply(base, ops)
    # The store holds `base` plus some prefix of the writes that are still listed as in flight.
    store_prefix = data.draw(st.integers(committed, len(ops)), label="also in store")
    assert in_flight.overlay("Counter", "k", _apply(base, ops[:store_prefix])) == expected
    assert in_flight.overlay("Counter", "other", dict(base)) == base
