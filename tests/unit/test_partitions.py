"""The partition model: stable key placement, exclusive ownership, partitions readable from IDs."""

from __future__ import annotations

from hypothesis import given, strategies as st

from sidecar.ids import IdGenerator, partition_of_id
from sidecar.process.partitions import PartitionMap

workers_and_index = st.integers(1, 8).flatmap(lambda w: st.tuples(st.just(w), st.integers(0, w - 1)))


@given(st.text(max_size=10), st.text(max_size=10), workers_and_index)
def test_every_key_has_one_partition_and_one_owner(service: str, key: str, wi: tuple[int, int]) -> None:
    workers, _ = wi
    maps = [PartitionMap(partitions=64, workers=workers, index=i) for i in range(workers)]
    partition = maps[0].of_key(service, key)
    assert all(m.of_key(service, key) == partition for m in maps)  # same answer in every process
    assert sum(m.owns(partition) for m in maps) == 1
    assert maps[maps[0].owner(partition)].owns(partition)


def test_key_placement_is_pinned_so_data_directories_stay_readable() -> None:
    # A changed hash would move existing keys to other partitions: this must never change.
    assert PartitionMap.single().of_key("Counter", "alice") == 51
    assert PartitionMap.single().of_target("Steps", None, "run", "order-1") == 20
    assert PartitionMap.single().of_schedule("nightly-report") == 15


@given(workers_and_index, st.integers(0, 10_000))
def test_keyless_invocations_land_on_a_partition_the_receiving_worker_owns(wi: tuple[int, int], n: int) -> None:
    workers, index = wi
    partitions = PartitionMap(partitions=64, workers=workers, index=index)
    assert partitions.owns(partitions.local_partition(n))


@given(st.integers(0, 255))
def test_invocation_ids_carry_their_partition_and_keep_sorting_by_time(partition: int) -> None:
    ids = IdGenerator()
    made = [ids.invocation_id(partition) for _ in range(50)]
    assert {partition_of_id(i) for i in made} == {partition}
    millis = [int(i[4:14].translate(str.maketrans("ABCDEFGHJKMNPQRSTVWXYZ", "abcdefghijklmnopqrstuv")), 32) for i in made]
    assert [m for m, _ in sorted(zip(millis, made), key=lambda pair: pair[1])] == millis
    assert partition_of_id("not-an-id") is None
