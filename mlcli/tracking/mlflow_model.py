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
        from mlcli.inference.predictor import Predictor
        from mlcli.runs.loading import load_model

        self.schema = FeatureSchema.load(Path(context.artifacts["schema"]))
        self.predictor = Predictor(load_model(Path(context.artifacts["model"])), self.schema)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Predictions for every row of `model_input`."""
        import pyarrow as pa

        from mlcli.inference.predict import predictions_table

        table = pa.Table.from_pandas(pd.DataFrame(model_input), preserve_index=False)
        outputs = self.predictor.outputs(table, source="the MLflow model's input")
        return predictions_table(outputs, self.schema).to_pandas()


mlflow.models.set_model(MlcliModel())
