"""Every kind of model a registry holds, loaded by streamml's loader and asked for a batch: the answer is,
value for value, what ``mlflow.pyfunc.load_model(uri).predict`` answers on the same frame (as MLflow's
scoring server writes it), with the model's own types; probabilities are ``predict_proba``'s. Loading
follows the policy: what would run code from the artifact only with the opt-in, saying why otherwise."""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from streamml.errors import ModelLoadError, UnsupportedOutput
from streamml.models.refs import ModelRef, RouteTarget
from streamml.models.registry import ModelRegistry
from streamml.settings import DEFAULT_TRUSTED_TYPES
from tests.models.zoo import CLASSIFIERS, ROUTES, RUNS_CODE, Zoo, records

RELATIVE = 1e-9


def mlflows_answer(zoo: Zoo, route: str, frame: Any) -> Any:
    """What ``mlflow models serve`` would put under "predictions" for this frame."""
    import mlflow.pyfunc
    from mlflow.pyfunc.scoring_server import predictions_to_json

    model = mlflow.pyfunc.load_model(zoo.routes[route])
    out = io.StringIO()
    predictions_to_json(model.predict(frame), out)
    return json.loads(out.getvalue())["predictions"]


def assert_same(got: Any, expected: Any, where: str = "") -> None:
    """Equal, floats within a relative 1e-9; ints stay ints, strings strings, booleans booleans."""
    if isinstance(expected, float) and not isinstance(got, bool):
        assert isinstance(got, float | int), f"{where}: {got!r} is not a number"
        assert math.isclose(got, expected, rel_tol=RELATIVE, abs_tol=1e-12), f"{where}: {got} != {expected}"
    elif isinstance(expected, dict):
        assert isinstance(got, dict), f"{where}: {got!r} is not an object"
        assert list(got) == list(expected), f"{where}: keys {list(got)} != {list(expected)}"
        for key in expected:
            assert_same(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list), f"{where}: {got!r} is not a list"
        assert len(got) == len(expected), f"{where}: {len(got)} values != {len(expected)}"
        for index, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
            assert_same(mine, theirs, f"{where}[{index}]")
    else:
        assert type(got) is type(expected), f"{where}: {got!r} ({type(got).__name__}) != {expected!r}"
        assert got == expected, f"{where}: {got!r} != {expected!r}"


@pytest.fixture(scope="module")
def registry(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    return ModelRegistry(
        zoo.tracking_uri,
        zoo.routes,
        trusted_types=DEFAULT_TRUSTED_TYPES,
        cache_dir=tmp_path_factory.mktemp("zoo-cache"),
        allow_code=list(RUNS_CODE),
    )


def ref_of(zoo: Zoo, route: str) -> ModelRef:
    target = RouteTarget.parse(zoo.routes[route])
    return ModelRef(route, target.name, target.version or "")


@pytest.mark.parametrize("route", ROUTES)
async def test_every_kind_answers_what_mlflow_answers_with_its_own_types(
    zoo: Zoo, registry: ModelRegistry, route: str
) -> None:
    frame = zoo.frame(route, 300)
    model = await registry.loader.load(ref_of(zoo, route))
    outputs = model.predict(records(frame))
    assert_same(outputs.answer(outputs.values), mlflows_answer(zoo, route, frame), route)
    assert model.executes_code is (route in RUNS_CODE)


@pytest.mark.parametrize("route", CLASSIFIERS)
async def test_probabilities_are_predict_proba_with_the_classes_they_stand_for(
    zoo: Zoo, registry: ModelRegistry, route: str
) -> None:
    import mlflow.pyfunc

    frame = zoo.frame(route, 200)
    model = await registry.loader.load(ref_of(zoo, route))
    assert model.has_proba
    outputs = model.predict_proba(records(frame))
    raw = mlflow.pyfunc.load_model(zoo.routes[route]).get_raw_model()
    expected = raw.predict_proba(frame)
    assert_same(outputs.values, expected.tolist(), route)
    assert outputs.classes == [c.item() if hasattr(c, "item") else c for c in raw.classes_]


@pytest.mark.parametrize("route", ["regressor", "booster", "custom", "onnx"])
async def test_a_model_without_predict_proba_says_so(zoo: Zoo, registry: ModelRegistry, route: str) -> None:
    model = await registry.loader.load(ref_of(zoo, route))
    assert not model.has_proba
    with pytest.raises(UnsupportedOutput, match="has no predict_proba"):
        model.predict_proba(records(zoo.frame(route, 3)))


@pytest.mark.parametrize("route", RUNS_CODE)
async def test_an_artifact_that_runs_code_is_refused_without_the_opt_in_naming_the_setting_and_risk(
    zoo: Zoo, tmp_path: Path, route: str
) -> None:
    registry = ModelRegistry(
        zoo.tracking_uri, zoo.routes, trusted_types=DEFAULT_TRUSTED_TYPES, cache_dir=tmp_path
    )
    with pytest.raises(ModelLoadError, match="STREAMML_MLFLOW_ALLOW_PICKLE") as refused:
        await registry.loader.load(ref_of(zoo, route))
    assert "runs code when it is loaded" in str(refused.value)
    assert "trust" in str(refused.value)


async def test_the_opt_in_is_per_route(zoo: Zoo, tmp_path: Path) -> None:
    """A version allowed for one route is not served through another that was not allowed."""
    routes = {"allowed": zoo.routes["pickled"], "other": zoo.routes["pickled"]}
    registry = ModelRegistry(
        zoo.tracking_uri,
        routes,
        trusted_types=DEFAULT_TRUSTED_TYPES,
        cache_dir=tmp_path,
        allow_code=["allowed"],
    )
    target = RouteTarget.parse(routes["allowed"])
    await registry.loader.load(ModelRef("allowed", target.name, target.version or ""))
    with pytest.raises(ModelLoadError, match="'other'"):
        await registry.loader.load(ModelRef("other", target.name, target.version or ""))


async def test_requirements_that_differ_from_the_workers_are_logged_or_refused(
    zoo: Zoo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow
    from sklearn.linear_model import Ridge

    frame = zoo.frame("regressor", 50)
    mlflow.set_tracking_uri(zoo.tracking_uri)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            Ridge().fit(frame, frame["age"]),
            name="model",
            registered_model_name="zoo-old-sklearn",
            serialization_format="skops",
            pip_requirements=["scikit-learn==0.24.2", "a-package-nobody-installed==1.0"],
        )
    ref = ModelRef("old", "zoo-old-sklearn", str(info.registered_model_version))
    warn = ModelRegistry(zoo.tracking_uri, {"old": ref.uri}, cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="streamml.models.loader"):
        await warn.loader.load(ref)
    [logged] = [r.getMessage() for r in caplog.records if "requirements" in r.getMessage()]
    assert "scikit-learn==0.24.2 (installed " in logged
    assert "a-package-nobody-installed==1.0 (not installed)" in logged
    refuse = ModelRegistry(zoo.tracking_uri, {"old": ref.uri}, cache_dir=tmp_path, requirements="refuse")
    with pytest.raises(ModelLoadError, match="STREAMML_MLFLOW_REQUIREMENTS=refuse"):
        await refuse.loader.load(ref)
