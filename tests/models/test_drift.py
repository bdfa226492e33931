"""The drift statistics on their own: scores against independent computations (scipy), unseen
categories, the window's bounds, and the states that are not numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from streamml.models.drift import (
    UNSEEN,
    DriftWindow,
    Reference,
    Thresholds,
    WindowCounts,
    drift_report,
)

PROFILE = {
    "format": "streamml-profile",
    "version": 1,
    "source": {"target": "label"},
    "columns": [
        {
            "name": "score",
            "kind": "numeric",
            "null_rate": 0.0,
            "std": 1.2,
            "marginal": {"type": "discrete", "values": [1, 2, 3, 4, 5], "probs": [0.1, 0.2, 0.4, 0.2, 0.1]},
        },
        {
            "name": "hours",
            "kind": "numeric",
            "null_rate": 0.1,
            "std": 2.0,
            "marginal": {
                "type": "quantiles",
                "values": list(np.linspace(0.0, 10.0, 1001)),
                "probs": list(np.linspace(0.0, 1.0, 1001)),
            },
        },
        {
            "name": "team",
            "kind": "categorical",
            "null_rate": 0.0,
            "marginal": {"type": "discrete", "values": ["a", "b"], "probs": [0.75, 0.25]},
        },
        {
            "name": "label",
            "kind": "categorical",
            "null_rate": 0.0,
            "marginal": {"type": "discrete", "values": ["Low", "High"], "probs": [0.5, 0.5]},
        },
    ],
}
REFERENCE = Reference.from_profile(PROFILE, ["score", "hours", "team"])


def window_of(records: Sequence[Mapping[str, object]], labels: list[str] | None = None) -> WindowCounts:
    return WindowCounts.of(REFERENCE, records, labels or ["Low"] * len(records))


def test_numeric_score_is_scipys_wasserstein_distance_over_the_reference_std() -> None:
    rng = np.random.default_rng(1)
    sample = rng.choice([1, 2, 3, 4, 5, 7], size=3000, p=[0.3, 0.3, 0.2, 0.1, 0.05, 0.05])
    report = drift_report(REFERENCE, window_of([{"score": float(x)} for x in sample]), Thresholds())
    expected = stats.wasserstein_distance([1, 2, 3, 4, 5], sample, u_weights=[0.1, 0.2, 0.4, 0.2, 0.1]) / 1.2
    assert report["features"]["score"]["score"] == pytest.approx(expected, abs=1e-4)


def test_continuous_score_is_close_to_scipys_for_a_shifted_uniform() -> None:
    rng = np.random.default_rng(2)
    sample = rng.uniform(2.0, 12.0, size=5000)  # the reference is uniform on 0..10: shifted by 2
    report = drift_report(REFERENCE, window_of([{"hours": float(x)} for x in sample]), Thresholds())
    expected = stats.wasserstein_distance(rng.uniform(0.0, 10.0, 200_000), sample) / 2.0
    assert report["features"]["hours"]["score"] == pytest.approx(expected, rel=0.03)
    assert report["features"]["hours"]["drifted"] is True


def test_categorical_score_is_scipys_jensen_shannon_and_unseen_values_count_and_raise_it() -> None:
    seen = [{"team": "a"}] * 60 + [{"team": "b"}] * 40
    report = drift_report(REFERENCE, window_of(seen), Thresholds(min_records=10))
    assert report["features"]["team"]["score"] == pytest.approx(
        distance.jensenshannon([0.75, 0.25], [0.6, 0.4], base=2), abs=1e-4
    )
    assert report["features"]["team"]["unseen"] == 0

    with_unseen = seen[:80] + [{"team": "z"}] * 20
    after = drift_report(REFERENCE, window_of(with_unseen), Thresholds(min_records=10))
    assert after["features"]["team"]["unseen"] == 20
    assert after["features"]["team"]["score"] > report["features"]["team"]["score"]
    assert window_of(with_unseen).categorical["team"][UNSEEN] == 20


def test_null_rate_change_flags_a_feature_whose_values_did_not_move() -> None:
    records = [{"hours": float(x)} for x in np.linspace(0.0, 10.0, 600)] + [{}] * 400
    report = drift_report(REFERENCE, window_of(records), Thresholds())
    hours = report["features"]["hours"]
    assert hours["score"] < 0.05
    assert hours["null_rate_change"] == pytest.approx(0.4 - 0.1)
    assert hours["drifted"] is True


def test_too_few_records_is_insufficient_data_and_no_reference_is_unknown() -> None:
    few = drift_report(REFERENCE, window_of([{"score": 3.0}] * 50), Thresholds(min_records=200))
    assert few["status"] == "insufficient data"
    assert "features" not in few
    unknown = drift_report(None, window_of([{"score": 3.0}] * 500), Thresholds())
    assert unknown["status"] == "unknown"


def test_route_is_drifted_when_the_share_of_drifted_features_reaches_the_threshold() -> None:
    hours = np.linspace(0.0, 10.0, 400)
    moved = [  # score moved to 5; hours and team as in training (hours' null rate 10 % too)
        {"score": 5.0, "team": "a" if i % 4 else "b"} | ({"hours": float(hours[i])} if i % 10 else {})
        for i in range(400)
    ]
    report = drift_report(REFERENCE, window_of(moved), Thresholds(share=0.5, min_records=100))
    assert report["drifted_features"] == ["score"]
    assert report["status"] == "ok"
    drifted = drift_report(REFERENCE, window_of(moved), Thresholds(share=0.3, min_records=100))
    assert drifted["status"] == "drifted"


def test_prediction_drift_compares_the_class_mix_with_the_training_labels() -> None:
    records = [{"score": 3.0}] * 300
    enough = Thresholds(min_records=100)
    balanced = drift_report(REFERENCE, window_of(records, ["Low", "High"] * 150), enough)
    skewed = drift_report(REFERENCE, window_of(records, ["High"] * 300), enough)
    assert balanced["prediction"]["score"] == pytest.approx(0.0, abs=1e-9)
    assert skewed["prediction"]["drifted"] is True
    assert skewed["prediction"]["window"] == {"High": 300}


def test_window_keeps_the_newest_records_up_to_its_size_and_age() -> None:
    window = DriftWindow(REFERENCE, max_records=1000, max_age_s=60.0, chunk_records=100)
    for second in range(30):
        window.add([{"score": 1.0}] * 100, ["Low"] * 100, now=1000.0 + second)
    assert window.flush(now=1030.0).records == 1000
    window.add([{"score": 5.0}] * 100, ["High"] * 100, now=1031.0)
    counts = window.flush(now=1031.0)
    assert counts.records == 1000
    assert counts.labels == {"Low": 900, "High": 100}  # the oldest chunk went, the newest came in
    assert window.flush(now=1031.0 + 61.0).records == 0  # all older than a minute


def test_counts_survive_json_and_merge_by_adding() -> None:
    one = window_of([{"score": 2.0, "team": "a"}] * 30)
    two = window_of([{"score": 4.0, "team": "q"}] * 20, ["High"] * 20)
    merged = WindowCounts.from_dict(one.as_dict())
    merged.add(WindowCounts.from_dict(two.as_dict()))
    assert merged.records == 50
    assert merged.categorical["team"] == {"a": 30, UNSEEN: 20}
    assert merged.labels == {"Low": 30, "High": 20}
    assert merged.numeric["score"].counts.tolist() == [0, 30, 0, 20, 0, 0]


def test_undrifted_windows_of_the_minimum_size_flag_no_feature() -> None:
    """The default minimum window is large enough that sampling noise alone flags nothing: ten windows
    of undrifted producer records against a model's training profile (benchmarks/drift_noise.py prints
    the noise at other sizes)."""
    import json

    from streamml.local.demo import training_frame
    from streamml.models.training import FEATURES, features_and_labels
    from streamml.synthetic.producer import record_stream
    from streamml.synthetic.profile import Profile, training_profile

    features, labels = features_and_labels(training_frame(None, 3000, 0)[0])
    reference = Reference.from_profile(json.loads(training_profile(features, labels).to_json()), FEATURES)
    thresholds = Thresholds()
    for seed in range(10):
        records = record_stream(Profile.load(), seed=100 + seed)
        window = [next(records) for _ in range(thresholds.min_records)]
        report = drift_report(
            reference, WindowCounts.of(reference, window, ["Low"] * len(window)), thresholds
        )
        assert report["drifted_features"] == [], (seed, report["features"])
