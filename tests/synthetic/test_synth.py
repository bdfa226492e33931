"""The shipped profile, the generator's guarantees, drift, and fidelity against the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamml.synthetic.fidelity import compare, naive_baseline, trtr_macro_f1
from streamml.synthetic.profile import Profile, profile_csv
from streamml.synthetic.synth import Drift, generate, parse_drifts


@pytest.fixture(scope="module")
def profile() -> Profile:
    return Profile.load()


def test_shipped_profile_is_reproduced_from_the_real_csv(real_csv: Path, tmp_path: Path) -> None:
    """`streamml profile` on the real CSV writes exactly the profile the package ships."""
    from importlib import resources

    shipped = resources.files("streamml.data").joinpath("employee_burnout.profile.json").read_text("utf-8")
    assert profile_csv(real_csv).to_json() == shipped


def test_profile_kinds_and_nulls(profile: Profile) -> None:
    kinds = {c.name: c.kind for c in profile.columns}
    assert kinds["Employee ID"] == "identifier"
    assert kinds["Date of Joining"] == "date"
    assert kinds["Gender"] == "categorical"
    assert kinds["Team Size"] == "numeric"
    assert profile.column("Team Size").integer
    assert not profile.column("Sleep Hours").integer
    assert profile.column("Mental Fatigue Score").null_rate == pytest.approx(2117 / 22750, abs=1e-4)
    assert profile.correlation.shape == (16, 16)
    assert np.all(np.linalg.eigvalsh(profile.correlation) > 0)


def test_generated_rows_keep_types_bounds_categories_and_null_rates(profile: Profile) -> None:
    frame = generate(profile, 50_000, seed=3)
    assert "Employee ID" not in frame.columns
    for column in profile.modelled:
        values = frame[column.name].dropna()
        if column.kind == "numeric":
            assert values.min() >= column.minimum, column.name
            assert values.max() <= column.maximum, column.name
            if column.integer:
                assert np.all(np.mod(values, 1) == 0), column.name
        if column.kind == "categorical":
            assert set(values) <= set(column.values), column.name
        assert frame[column.name].isna().mean() == pytest.approx(column.null_rate, abs=0.01), column.name
    assert frame["Team Size"].dtype == np.int64
    assert pd.to_datetime(frame["Date of Joining"]).dt.year.eq(2008).all()


def test_generation_is_seeded_and_nulls_can_be_switched_off(profile: Profile) -> None:
    pd.testing.assert_frame_equal(generate(profile, 500, seed=7), generate(profile, 500, seed=7))
    assert not generate(profile, 500, seed=7).equals(generate(profile, 500, seed=8))
    assert generate(profile, 5000, seed=1, nulls=False).notna().all().all()


def test_drift_shifts_scales_reweights_and_raises_nulls(profile: Profile) -> None:
    base = generate(profile, 40_000, seed=5)
    shifted = generate(profile, 40_000, seed=5, drift=parse_drifts(["Sleep Hours=+1sd"]))
    std = profile.column("Sleep Hours").std or 1.0
    assert shifted["Sleep Hours"].mean() - base["Sleep Hours"].mean() == pytest.approx(std, rel=0.1)
    share = generate(profile, 40_000, seed=5, drift=[Drift.parse("Gender[Male]=0.8")])
    assert (share["Gender"] == "Male").mean() == pytest.approx(0.8, abs=0.01)
    nulls = generate(profile, 40_000, seed=5, drift=[Drift.parse("Team Size:null=0.3")])
    assert nulls["Team Size"].isna().mean() == pytest.approx(0.3, abs=0.01)
    scaled = generate(profile, 40_000, seed=5, drift=[Drift.parse("Work Hours per Week=*0.5")])
    assert scaled["Work Hours per Week"].std() < 0.6 * base["Work Hours per Week"].std()


@pytest.mark.parametrize("spec", ["Sleep Hours", "Nope=+1sd", "Gender=+1sd", "Gender[Other]=0.5"])
def test_bad_drift_specs_say_what_is_wrong(profile: Profile, spec: str) -> None:
    with pytest.raises(ValueError, match=r"drift|column|categor|numeric"):
        generate(profile, 10, drift=parse_drifts([spec]))


def test_fidelity_against_the_real_data(real_csv: Path, profile: Profile) -> None:
    """The issue's thresholds, on a 20k-row sample: KS, shares, nulls, correlations and TSTR."""
    real = pd.read_csv(real_csv)
    report = compare("ours", real, generate(profile, 20_000, seed=11), profile, seed=0)
    assert report.max_ks <= 0.05, report.ks
    assert max(report.category_share_gap_pp.values()) <= 1.0
    assert max(report.null_rate_gap_pp.values()) <= 1.0
    assert report.max_correlation_gap <= 0.05
    assert abs(report.tstr_macro_f1 - trtr_macro_f1(real, seed=0)) <= 0.03

    naive = compare("naive", real, naive_baseline(real, 20_000, seed=11), profile, seed=0)
    assert naive.max_ks > report.max_ks  # noise moves values off the real grid
