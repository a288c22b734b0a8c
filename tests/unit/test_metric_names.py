"""The metrics follow Prometheus's naming conventions, so dashboards and alerts read them as expected."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from sidecar.metrics import Metrics


def test_every_metric_is_named_as_prometheus_expects() -> None:
    families = list(text_string_to_metric_families(Metrics().exposition().decode()))
    assert len(families) >= 25
    for family in families:
        assert family.name.startswith("sidecar_"), family.name
        assert family.documentation, family.name
        assert not family.name.endswith(("_ms", "_milliseconds", "_kb", "_mb")), family.name
        if "bytes" in family.name:
            assert family.name.endswith("_bytes"), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_batches")), family.name
