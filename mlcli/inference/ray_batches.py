"""What `mlcli predict --ray` runs inside Ray's workers: the predicting actor and the part writer.

`RunActor` is the class of Ray Data's actor pool: each actor opens the run once, in
`__init__`, through `choose_predictor` (the light path where the run has it, else the Keras
model: the same predictor as the local predict), and then turns each block of raw rows into the
rows predict writes (`predictions_table`). `PartSink` writes each write task's blocks to one
part file, `part-<task>.<format>`, with predict's own batch writers, and counts the rows.

Imported only once `mlcli._ray.require_ray` has found Ray: it imports `ray.data` itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.data.datasource import Datasink, WriteResult

from mlcli.reporting import QuietReporter

if TYPE_CHECKING:
    import pyarrow as pa

    from mlcli.config.schema import CsvOptions
    from mlcli.features.schema import FeatureSchema

PART_PREFIX = "part-"
PART_SUFFIXES = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}


def part_name(task: int, format: str) -> str:
    """The name of write task `task`'s part file: names sort in the order of the rows."""
    return f"{PART_PREFIX}{task:06d}{PART_SUFFIXES[format]}"


def is_part(name: str) -> bool:
    """Whether a file name is one that `predict --ray` writes (`part-000012.parquet`)."""
    stem, dot, suffix = name.partition(".")
    number = stem.removeprefix(PART_PREFIX)
    return (
        bool(dot) and stem != number and number.isdigit() and f".{suffix}" in PART_SUFFIXES.values()
    )


def write_empty_part(
    folder: Path, format: str, schema: FeatureSchema, *, keep: Sequence[str], threshold: float
) -> None:
    """The one part of an input with no rows: the columns alone, as the local predict writes."""
    import pyarrow as pa

    from mlcli.inference.light import no_outputs
    from mlcli.inference.predict import predictions_table
    from mlcli.inference.writers import open_writer

    empty = pa.table({name: pa.array([], pa.string()) for name in keep})
    writer = open_writer(format, folder / part_name(0, format))
    try:
        writer.write(predictions_table(no_outputs(schema), schema, kept=empty, threshold=threshold))
        writer.close()
    finally:
        writer.abort()


class RunActor:
    """Predicts blocks of raw rows with a run loaded once per actor (Ray Data's actor pool).

    Example (what `mlcli.inference.ray_predict` does):

    ```python
    dataset.map_batches(RunActor, fn_constructor_kwargs={...}, compute=ActorPoolStrategy(size=2),
                        batch_format="pyarrow")
    ```
    """

    def __init__(
        self,
        *,
        run: str,
        keep: Sequence[str],
        threshold: float,
        batch_rows: int,
        csv: CsvOptions | None,
        source: str,
        threads: int = 1,
    ) -> None:
        from mlcli.inference.choice import choose_predictor
        from mlcli.runs.loading import open_run

        loaded = open_run(run, with_model=False)
        self._predictor = choose_predictor(
            loaded.run,
            loaded.schema,
            reporter=QuietReporter(),
            batch_rows=batch_rows,
            threads=threads,
        )
        self._keep = list(keep)
        self._threshold = threshold
        self._csv = csv
        self._source = source

    def __call__(self, table: pa.Table) -> pa.Table:
        """The rows predict writes for one block: the kept columns, then the predictions."""
        from mlcli.data.csv_files import clean_strings
        from mlcli.data.parquet_files import plain_table
        from mlcli.data.tables import require_columns
        from mlcli.inference.predict import predictions_table

        # what the local reader does after pyarrow parses a block
        table = clean_strings(table, self._csv) if self._csv is not None else plain_table(table)
        require_columns(table.column_names, self._keep, source=self._source)
        outputs = self._predictor.outputs(table, source=self._source)
        kept = table.select(self._keep)
        return predictions_table(
            outputs, self._predictor.schema, kept=kept, threshold=self._threshold
        )


class PartSink(Datasink[int]):
    """Ray Data's datasink for predict: each write task's blocks go to one part file in `folder`.

    Written with predict's own writers (`mlcli.inference.writers`), so a part holds what the
    local predict writes for the same rows; `rows` holds the count once Ray calls
    `on_write_complete` on the driver.
    """

    def __init__(self, folder: Path, format: str) -> None:
        self.folder = folder
        self.format = format
        self.rows = 0

    def write(self, blocks: Iterable[Any], ctx: Any) -> int:
        """Writes the blocks of one write task to `part-<task>`; returns their number of rows."""
        from mlcli.inference.writers import open_writer

        writer = open_writer(self.format, self.folder / part_name(ctx.task_idx, self.format))
        rows = 0
        try:
            for block in blocks:
                writer.write(block)
                rows += block.num_rows
            writer.close()
        finally:
            writer.abort()
        return rows

    def on_write_complete(self, write_result: WriteResult[int]) -> None:
        """Keeps the number of rows written."""
        self.rows = int(write_result.num_rows)

    def get_name(self) -> str:
        """The name Ray's progress and logs give this sink."""
        return f"mlcli-{self.format}"
