"""How the LightGBM demo model's size trades holdout macro-F1 against predict speed.

Usage: ``python -m streamml.bench.model_size [--data enriched_employee_dataset.csv]`` (without ``--data``,
20,000 rows generated from the shipped profile). Same split, seed and preprocessing as
`streamml train`; speed is the classifier alone on 4,096 preprocessed rows, one thread.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from streamml.local.demo import training_frame
from streamml.models.training import build_pipelines, features_and_labels

CONFIGS = [  # (trees per class, learning rate, leaves)
    (200, 0.05, 31),
    (100, 0.1, 31),
    (60, 0.1, 15),
    (50, 0.1, 7),
    (30, 0.2, 15),
]


def main() -> None:
    from lightgbm import LGBMClassifier
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    frame, source = training_frame(args.data, 20_000, 0)
    features, labels = features_and_labels(frame)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.2, stratify=labels, random_state=0
    )
    preprocess = build_pipelines(0)["LightGBM_Classifier"].named_steps["preprocess"].fit(x_train)
    train, test = preprocess.transform(x_train), preprocess.transform(x_test)
    rows = np.resize(test, (4096, test.shape[1]))
    print(f"data: {source}; holdout {len(y_test)} rows")
    print(f"{'trees':>5} {'lr':>5} {'leaves':>6} {'macro-F1':>9} {'rows/s (4,096 a call)':>22}")
    for trees, rate, leaves in CONFIGS:
        model = LGBMClassifier(
            n_estimators=trees, learning_rate=rate, num_leaves=leaves, n_jobs=1, random_state=0, verbose=-1
        ).fit(train, y_train)
        f1 = f1_score(y_test, model.predict(test), average="macro")
        model.predict(rows)
        started = time.perf_counter()
        for _ in range(5):
            model.predict(rows)
        speed = 5 * len(rows) / (time.perf_counter() - started)
        print(f"{trees:>5} {rate:>5} {leaves:>6} {f1:>9.4f} {speed:>22,.0f}")


if __name__ == "__main__":
    main()
