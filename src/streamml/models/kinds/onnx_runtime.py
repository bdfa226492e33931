"""ONNX models saved by ``mlflow.onnx``, run with onnxruntime on the CPU (the protobuf file holds a graph,
not code). It answers as MLflow's ONNX wrapper does for a frame: a model of one input tensor takes the
frame's values, one of several takes a column each; ``float`` inputs are given 32-bit floats; the answer
is a frame of one column per output, each flattened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamml.errors import ModelLoadError
from streamml.models.inference import LoadedModel
from streamml.models.kinds.base import flavor, schema_of
from streamml.models.refs import ModelRef


@dataclass
class OnnxModel(LoadedModel):
    session: Any = None

    def call(self, frame: pd.DataFrame) -> Any:
        inputs = self.session.get_inputs()
        if len(inputs) > 1:
            feeds = {i.name: frame[i.name].to_numpy() for i in inputs}
        else:
            feeds = {inputs[0].name: frame.to_numpy()}
        for tensor in inputs:
            if tensor.type == "tensor(float)" and feeds[tensor.name].dtype == np.float64:
                feeds[tensor.name] = feeds[tensor.name].astype(np.float32)
        names = [output.name for output in self.session.get_outputs()]
        answered = self.session.run(names, feeds)
        return pd.DataFrame.from_dict(
            {name: np.asarray(values).reshape(-1) for name, values in zip(names, answered, strict=True)}
        )


class OnnxRuntime:
    name = "ONNX"

    def claims(self, mlmodel: Any) -> bool:
        return "onnx" in mlmodel.flavors

    def executes_code(self, mlmodel: Any) -> bool:
        return False

    def load(self, directory: Path, mlmodel: Any, ref: ModelRef) -> LoadedModel:
        try:
            import onnxruntime
        except ImportError:
            raise ModelLoadError(
                f"{ref.uri} is an ONNX model and onnxruntime is not installed in the worker's environment "
                "(pip install 'streamml[onnx]')"
            ) from None
        path = directory / flavor(mlmodel, "onnx")["data"]
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return OnnxModel(
            ref.route, ref.name, ref.version, schema_of(mlmodel), kind=self.name, session=session
        )
