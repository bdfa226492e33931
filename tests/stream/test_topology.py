"""The pipeline's layout, built once from the stream settings: partitions and their keys, where a request
goes, and the one id format that points back into a partition."""

from __future__ import annotations

import pytest

from streamml.settings import StreamSettings
from streamml.stream.topology import CLUSTER_PARTITIONS, StreamTopology


def test_an_unset_partition_count_is_one_on_a_single_redis_and_twelve_on_a_cluster() -> None:
    settings = StreamSettings(name="pipe")
    assert StreamTopology.of(settings).count == 1
    assert StreamTopology.of(settings, cluster=True).count == CLUSTER_PARTITIONS == 12
    assert settings.partitions is None  # the settings are not rewritten by the topology


def test_a_configured_partition_count_wins_on_a_cluster_too() -> None:
    assert StreamTopology.of(StreamSettings(name="pipe", partitions=3), cluster=True).count == 3


def test_every_key_of_a_partition_is_derived_from_its_stream() -> None:
    topology = StreamTopology.of(StreamSettings(name="pipe", results="out", partitions=2))
    part = topology.partitions[1]
    assert part.stream.startswith("pipe:{")
    assert part.results.startswith("out:{")
    tag = part.stream.removeprefix("pipe:")
    assert part.results.endswith(tag)
    assert part.dead_letters == f"{part.stream}:dlq"
    assert part.result_key("r1") == f"{part.stream}:result:r1"
    assert part.idempotency_key("k") == f"{part.stream}:idem:k"
    assert part.counters.accepted == f"{part.stream}:counts:accepted"


@pytest.mark.parametrize("raw", ["0123456789abcdef", "1700000000000-3"])
def test_an_id_tagged_with_its_partition_locates_it_request_ids_and_letter_ids_alike(raw: str) -> None:
    topology = StreamTopology.of(StreamSettings(name="pipe", partitions=4))
    for part in topology.partitions:
        tagged = topology.tag_id(raw, part)
        assert tagged == f"{raw}-{part.index}"
        assert topology.locate(tagged) == (part, raw)


@pytest.mark.parametrize("foreign", ["0123456789abcdef", "abc-4", "abc-x", "-1", ""])
def test_an_id_that_names_no_partition_of_the_pipeline_locates_nothing(foreign: str) -> None:
    assert StreamTopology.of(StreamSettings(name="pipe", partitions=4)).locate(foreign) is None


def test_ids_of_a_single_stream_carry_no_partition() -> None:
    topology = StreamTopology.of(StreamSettings(name="pipe"))
    [only] = topology.partitions
    assert topology.tag_id("1700000000000-3", only) == "1700000000000-3"
    assert topology.locate("1700000000000-3") == (only, "1700000000000-3")


def test_the_same_idempotency_key_always_goes_to_the_same_partition_and_others_take_turns() -> None:
    topology = StreamTopology.of(StreamSettings(name="pipe", partitions=4))
    assert len({topology.partition_for("order-77") for _ in range(10)}) == 1
    assert [topology.partition_for(None).index for _ in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
