"""The MLServer peer's request body, which must mean the same to both systems. MLServer itself runs in
the recorded benchmark (its environment takes minutes to install: too long for the CI smoke run)."""

from __future__ import annotations

from streamml.bench.e2e_run import complete_records
from streamml.bench.mlserver import v2_body
from streamml.gateway.open_inference import read_infer
from streamml.settings import GatewaySettings


def test_streamml_reads_the_v2_body_sent_to_mlserver_as_the_same_records() -> None:
    records = complete_records(100)
    read = read_infer(v2_body(records), None, GatewaySettings(max_records=100))
    assert read.rows.records == records
