"""docs/config.md is what docs/gen_config.py makes of the schema today."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO, regenerated

REFERENCE = REPO / "docs" / "config.md"


def _generate(output: Path) -> str:
    return regenerated("gen_config.py", output)


def test_the_config_reference_is_up_to_date(tmp_path):
    fresh = _generate(tmp_path / "config.md")
    assert REFERENCE.read_text(encoding="utf-8") == fresh, (
        "docs/config.md is stale: regenerate it with `python docs/gen_config.py` and commit it"
    )


def test_the_reference_lists_every_key_by_its_dotted_path(tmp_path):
    text = _generate(tmp_path / "config.md")
    for key in (
        "name",
        "data.train",
        "data.csv.na_values",
        "data.test.csv.skip_rows",
        "target.column",
        "features.exclude",
        "features.<column>.transform",
        "model.hidden_units",
        "model.numeric_embedding.bins",
        "model.token_dim",
        "training.early_stopping.patience",
        "output.dir",
        "tune.parameters.<key>.low",
        "tracking.mlflow.uri",
    ):
        assert f"| `{key}` |" in text, key
    assert "| `training.epochs` | integer in [1, 100000] | `10` | " in text
    assert '| `data.csv.na_values` | list of string | `["", "NA",' in text
    assert "### `model` with `type: mlp` (the default)" in text
    for heading in ("## `data`", "## `model`", "## `training`"):
        assert heading in text
