"""An mlcli run as an MLflow pyfunc model, logged as code (MLflow's "models from code").

MLflow stores this file beside the run's `model.keras` and `schema.json`, so nothing is
pickled; loading it (`mlflow.pyfunc.load_model`, `mlflow models serve --env-manager local`)
needs mlcli installed. It takes a DataFrame of raw columns and returns a DataFrame with the
`prediction` (the user's own label values, or the number) and, for classifiers, one
`probability_<class>` column per output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class MlcliModel(PythonModel):
    """Raw columns in, predictions out, with the run's own preprocessing inside the model."""

    def load_context(self, context: Any) -> None:
        """Loads `model.keras` (Keras safe mode) and `schema.json` from the logged artifacts."""
        from mlcli._tensorflow import import_tensorflow

        import_tensorflow()
        from mlcli.features.schema import FeatureSchema
        from mlcli.runs.loading import load_model

        self.schema = FeatureSchema.load(Path(context.artifacts["schema"]))
        self.model = load_model(Path(context.artifacts["model"]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Predictions for every row of `model_input`."""
        import pyarrow as pa

        from mlcli.models.core import predict_raw
        from mlcli.preprocessing.inputs import model_inputs
        from mlcli.runs.loading import labels_from_outputs

        frame = pd.DataFrame(model_input)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        arrays = model_inputs(table, self.schema, source="the MLflow model's input")
        outputs = predict_raw(self.model, arrays, self.schema)
        result: dict[str, Any] = {"prediction": labels_from_outputs(outputs, self.schema)}
        target = self.schema.target
        if target.task == "binary":
            result[f"probability_{target.positive_class}"] = outputs.reshape(-1)
        elif target.task == "multiclass":
            for index, value in enumerate(target.classes):
                result[f"probability_{value}"] = outputs[:, index]
        return pd.DataFrame(result)


mlflow.models.set_model(MlcliModel())
