"""How large drift scores are when nothing drifted: the sampling noise that decides the smallest window
worth scoring (STREAMML_DRIFT_MIN_RECORDS).

Windows of undrifted producer records of several sizes, ten seeds each, are scored against the training
profile of demo models trained on 3,000 generated rows (as the tests' registry is); it prints, per size,
the median and largest top feature score and how many features the 0.1 threshold flagged.

    .venv/bin/python benchmarks/drift_noise.py
"""

from __future__ import annotations

import json
import statistics

from streamml.local.demo import training_frame
from streamml.models.drift import Reference, Thresholds, WindowCounts, drift_report
from streamml.models.training import FEATURES, features_and_labels
from streamml.synthetic.producer import record_stream
from streamml.synthetic.profile import Profile, training_profile

SIZES = (300, 500, 1000, 2000, 5000)
SEEDS = 10


def main() -> None:
    features, labels = features_and_labels(training_frame(None, 3000, 0)[0])
    reference = Reference.from_profile(json.loads(training_profile(features, labels).to_json()), FEATURES)
    print("records  top score p50  top score max  features flagged (of 13 x 10 windows)")
    for size in SIZES:
        tops, flagged = [], 0
        for seed in range(SEEDS):
            records = record_stream(Profile.load(), seed=100 + seed)
            window = [next(records) for _ in range(size)]
            counts = WindowCounts.of(reference, window, ["Low"] * size)
            report = drift_report(reference, counts, Thresholds(min_records=1))
            tops.append(max(f["score"] for f in report["features"].values()))
            flagged += len(report["drifted_features"])
        print(f"{size:7d}  {statistics.median(tops):13.3f}  {max(tops):13.3f}  {flagged:4d}")


if __name__ == "__main__":
    main()
