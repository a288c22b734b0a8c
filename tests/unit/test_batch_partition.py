"""Cluster mode sends each batch to its partition's log: the partition read from a batch's keys
must be the one its invocation or key belongs to, whatever the names, and a batch that spans two
partitions must be refused rather than logged under one of them."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from handler_sdk.protocol import ClearAllState, Run, Send, SetState
from sidecar.cluster.batch_partition import MixedBatch, batch_partition
from sidecar.ids import IdGenerator
from sidecar.process.partitions import PartitionMap
from sidecar.store import Changes, keys
from sidecar.store.records import ChildSpec, InvocationRecord, ParkedSend, PromiseRecord, ResolutionSpec

names = st.text(min_size=1, max_size=300)
ids = IdGenerator()


def _record(service: str, key: str | None, partition: int, **fields: object) -> InvocationRecord:
    return InvocationRecord(id=ids.invocation_id(partition), service=service, handler="h", key=key,
                            handler_kind="exclusive", status="running", deployment_id="dp_x", created_ms=1,
                            modified_ms=1, **fields)  # type: ignore[arg-type]


@given(names, st.none() | names, st.sampled_from([1, 7, 64, 256]), st.none() | names)
def test_every_change_an_invocation_makes_is_read_as_its_partition(
        service: str, key: str | None, count: int, idempotency: str | None) -> None:
    partitions = PartitionMap.single(count)
    partition = partitions.of_key(service, key) if key is not None else count // 2
    record = _record(service, key, partition)
    raw_idempotency = keys.idempotency_key(service, key, "h", idempotency) if idempotency is not None else None
    made = [Changes() for _ in range(6)]
    made[0].create(record, b"1", raw_idempotency)
    made[1].append_entry(record, 1, SetState(name="n" * 400, value=b"v") if key is not None else Run(name="r", value=b"v", cost=1.0))
    made[1].add_timer(5, record.id, 2)
    record.completed_ms = 9
    record.status = "completed"
    made[2].finish(record)
    made[3].purge(record, raw_idempotency)
    made[4].put_cost(record, 3, Run(name="r", value=b"v", cost=0.5), 5)
    if key is not None:
        made[4].append_entry(record, 4, ClearAllState())
        made[4].set_state(service, key, "x", b"y")
        made[4].put_promise(service, key, "p", PromiseRecord())
    made[5].remove_outbox(ResolutionSpec(sender_id=record.id, awakeable_id="sign_" + "a" * 40))
    for batch in made:
        assert batch_partition(batch, count) == partition


@given(names, st.sampled_from([1, 64, 256]))
def test_a_schedule_is_read_as_its_names_partition(name: str, count: int) -> None:
    changes = Changes()
    changes.delete_schedule(name)
    assert batch_partition(changes, count) == PartitionMap.single(count).of_schedule(name)


def test_an_outbox_entry_belongs_to_its_sender_not_its_receiver() -> None:
    sender, child = _record("A", "a", 3), _record("B", "b", 9, parent_id=None)
    child.parent_id = sender.id
    for entry in (ChildSpec(record=child, input=b""),
                  ParkedSend(sender_id=sender.id, index=1, entry=Send(service="B", handler="h", input=b"",
                                                                      invocation_id=child.id))):
        changes = Changes()
        changes.put_outbox(entry)
        assert batch_partition(changes, 64) == 3
        changes = Changes()
        changes.remove_outbox(entry)
        assert batch_partition(changes, 64) == 3


def test_a_batch_across_partitions_is_refused_and_one_of_nobody_has_none() -> None:
    changes = Changes()
    changes.put_invocation(_record("A", None, 1))
    changes.put_invocation(_record("A", None, 2))
    with pytest.raises(MixedBatch):
        batch_partition(changes, 64)
    nobody = Changes()
    nobody.delete_deployment("dp_x")
    assert batch_partition(nobody, 64) is None
    assert batch_partition(Changes(), 64) is None

