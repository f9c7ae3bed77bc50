"""`extends`: parents merged in order, own keys last, deep merge, cycles and missing parents
named with their chain, presets by name and files by relative path, every preset valid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.config.inheritance import merge_documents, preset_names, presets_folder
from mlcli.config.loading import config_to_yaml, load_config, load_document
from mlcli.config.overrides import dotted_items
from mlcli.config.schema import Config, json_schema
from mlcli.errors import ConfigError

runner = CliRunner()
BASE = {"name": "x", "data": {"train": "t.csv"}, "target": {"column": "y"}}


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# ---- merging --------------------------------------------------------------------------------

_keys = st.sampled_from(["a", "b", "c", "d"])  # never `type`: that rule is tested on its own
_leaves = st.one_of(st.integers(0, 9), st.none(), st.lists(st.integers(0, 9), max_size=2))
_documents = st.recursive(
    st.dictionaries(_keys, _leaves, max_size=3),
    lambda inner: st.dictionaries(_keys, st.one_of(_leaves, inner), max_size=3),
    max_leaves=8,
)


@given(base=_documents, over=_documents)
def test_every_leaf_of_the_later_document_wins_and_the_others_stay(base, over):
    merged = dotted_items(merge_documents(base, over))
    later = dotted_items(over)
    for key, value in later.items():
        if value != {}:  # an empty mapping merges into the one before it
            assert merged[key] == value
    for key, value in dotted_items(base).items():
        shadowed = key in later or any(key.startswith(f"{k}.") for k in later if later[k] != {})
        overlaid = any(k.startswith(f"{key}.") for k in later)  # a leaf made into a section
        if not shadowed and not overlaid:
            assert merged[key] == value


@given(base=_documents, over=_documents)
def test_merging_leaves_both_documents_as_they_were(base, over):
    before = (repr(base), repr(over))
    merged = merge_documents(base, over)
    assert (repr(base), repr(over)) == before
    assert merge_documents(merged, {}) == merged


def test_lists_are_replaced_and_mappings_merged_at_every_depth():
    base = {"training": {"epochs": 5, "early_stopping": {"monitor": "val_auc", "patience": 2}}}
    over = {"training": {"early_stopping": {"patience": 9}}, "model": {"hidden_units": [8]}}
    merged = merge_documents({**base, "model": {"hidden_units": [64, 32]}}, over)
    assert merged["training"] == {
        "epochs": 5,
        "early_stopping": {"monitor": "val_auc", "patience": 9},
    }
    assert merged["model"] == {"hidden_units": [8]}


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        # another model family replaces the one before it, keys and all
        ({"hidden_units": [8], "dropout": 0.2}, {"type": "resnet"}, {"type": "resnet"}),
        # the same family merges
        ({"type": "mlp", "dropout": 0.2}, {"type": "mlp"}, {"type": "mlp", "dropout": 0.2}),
        # no `type` written: keys merge into whatever family came before
        (
            {"type": "resnet", "width": 8},
            {"blocks": 4},
            {"type": "resnet", "width": 8, "blocks": 4},
        ),
    ],
)
def test_a_model_of_another_type_replaces_the_one_before_it(before, after, expected):
    assert merge_documents({"model": before}, {"model": after})["model"] == expected


def test_a_feature_of_another_type_replaces_and_a_numeric_embedding_merges():
    base = {
        "features": {"age": {"type": "numeric", "transform": "log"}, "exclude": ["id"]},
        "model": {"numeric_embedding": {"type": "periodic", "dim": 8}},
    }
    over = {
        "features": {"age": {"type": "categorical"}},
        "model": {"numeric_embedding": {"type": "piecewise_linear"}},
    }
    merged = merge_documents(base, over)
    assert merged["features"] == {"age": {"type": "categorical"}, "exclude": ["id"]}
    # not a choice between sections: `type` is one more key there
    assert merged["model"]["numeric_embedding"] == {"type": "piecewise_linear", "dim": 8}


# ---- files and presets ----------------------------------------------------------------------


def test_parents_merge_in_order_with_the_configs_own_keys_last(tmp_path: Path):
    _write(tmp_path / "one.yaml", {"seed": 1, "training": {"epochs": 1, "batch_size": 8}})
    _write(tmp_path / "two.yaml", {"seed": 2, "training": {"epochs": 2}})
    path = _write(
        tmp_path / "config.yaml",
        {"extends": ["one.yaml", "two.yaml"], **BASE, "training": {"batch_size": 16}},
    )
    config = load_config(path)
    assert config.seed == 2  # the later parent
    assert (config.training.epochs, config.training.batch_size) == (2, 16)  # own keys last
    reversed_order = _write(
        tmp_path / "reversed.yaml", {"extends": ["two.yaml", "one.yaml"], **BASE}
    )
    assert load_config(reversed_order).seed == 1


def test_overrides_apply_after_every_parent(tmp_path: Path):
    _write(tmp_path / "base.yaml", {"training": {"epochs": 7}})
    path = _write(tmp_path / "config.yaml", {"extends": "base.yaml", **BASE})
    assert load_config(path, overrides=["training.epochs=3"]).training.epochs == 3


def test_a_preset_by_name_and_a_file_by_relative_path(tmp_path: Path):
    shared = _write(
        tmp_path / "shared" / "base.yaml",
        {"extends": ["training/fast"], "data": {"train": "data/t.csv"}, "target": {"column": "y"}},
    )
    path = _write(
        tmp_path / "project" / "config.yaml",
        {"extends": ["../shared/base.yaml", "models/resnet"], "name": "x"},
    )
    config = load_config(path)
    fast = yaml.safe_load((presets_folder() / "training" / "fast.yaml").read_text())
    assert config.training.epochs == fast["training"]["epochs"]
    assert config.model.type == "resnet"
    # a parent's relative data path is taken from the parent's folder
    assert config.data.train == str(shared.parent / "data" / "t.csv")


def test_the_configs_own_paths_stay_relative_to_it_and_variables_fill_in_every_file(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("TEST_PRESET_EPOCHS", "6")
    _write(
        tmp_path / "parents" / "base.yaml",
        {
            "data": {"test": {"path": "${TEST_PRESET_DIR:-held}/test.csv"}},
            "training": {"epochs": "${TEST_PRESET_EPOCHS}"},
        },
    )
    path = _write(tmp_path / "config.yaml", {"extends": ["parents/base.yaml"], **BASE})
    config = load_config(path)
    assert config.data.train == str(tmp_path / "t.csv")
    assert config.data.test.path == str(tmp_path / "parents" / "held" / "test.csv")
    assert config.training.epochs == 6
    assert "${TEST_PRESET_EPOCHS}" in config_to_yaml(config)  # the reference, as written


def test_a_diamond_is_no_circle(tmp_path: Path):
    _write(tmp_path / "root.yaml", {"seed": 3})
    _write(tmp_path / "left.yaml", {"extends": ["root.yaml"]})
    _write(tmp_path / "right.yaml", {"extends": ["root.yaml"], "training": {"epochs": 4}})
    path = _write(tmp_path / "config.yaml", {"extends": ["left.yaml", "right.yaml"], **BASE})
    config = load_config(path)
    assert (config.seed, config.training.epochs) == (3, 4)


@pytest.mark.parametrize(
    ("files", "chain"),
    [
        ({"a.yaml": ["a.yaml"]}, "a.yaml -> a.yaml"),
        ({"a.yaml": ["b.yaml"], "b.yaml": ["a.yaml"]}, "a.yaml -> b.yaml -> a.yaml"),
        (
            {"a.yaml": ["models/mlp", "b.yaml"], "b.yaml": ["c.yaml"], "c.yaml": ["./b.yaml"]},
            "a.yaml -> b.yaml -> c.yaml -> ./b.yaml",
        ),
    ],
    ids=["self", "a-b-a", "longer"],
)
def test_a_circle_is_a_config_error_naming_the_chain(tmp_path: Path, monkeypatch, files, chain):
    monkeypatch.chdir(tmp_path)
    for name, parents in files.items():
        _write(tmp_path / name, {"extends": parents, **BASE})
    result = runner.invoke(app, ["validate", "a.yaml"])
    assert result.exit_code == 2, result.output
    assert f"goes round in a circle: {chain};" in result.stderr


def test_a_missing_parent_is_a_config_error_naming_the_chain(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "a.yaml", {"extends": ["models/mlp", "b.yaml"], **BASE})
    _write(tmp_path / "b.yaml", {"extends": ["gone.yaml"]})
    result = runner.invoke(app, ["config", "show", "a.yaml"])
    assert result.exit_code == 2, result.output
    assert f"`extends[0]` of `{tmp_path / 'b.yaml'}`" in result.stderr
    assert f"no such file {tmp_path / 'gone.yaml'}" in result.stderr
    assert result.stderr.rstrip().endswith("chain: a.yaml -> b.yaml -> gone.yaml")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("models/resnett", "no preset named 'models/resnett' (did you mean 'models/resnet'?)"),
        ("models/resnet.yaml", "(the preset is written `models/resnet`)"),
        ("models\\resnet", "neither a preset name (models/resnet) nor a YAML file"),
    ],
)
def test_a_missing_preset_says_what_there_is(tmp_path: Path, entry, message):
    path = _write(tmp_path / "config.yaml", {"extends": [entry], **BASE})
    with pytest.raises(ConfigError, match=r"chain: .*config\.yaml -> ") as raised:
        load_config(path)
    assert message in str(raised.value)
    if "no preset named" in message:
        assert ", ".join(preset_names()) in str(raised.value)


@pytest.mark.parametrize("value", [3, [1], [""], {"a": 1}])
def test_extends_must_be_a_list_of_names(tmp_path: Path, value):
    path = _write(tmp_path / "config.yaml", {"extends": value, **BASE})
    with pytest.raises(ConfigError, match="`extends` must be a list of preset names or YAML"):
        load_config(path)


def test_config_show_prints_the_merged_config_without_extends(tmp_path: Path):
    path = _write(tmp_path / "config.yaml", {"extends": ["models/resnet"], **BASE})
    result = runner.invoke(app, ["config", "show", str(path), "--set", "model.width=32"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert "extends" not in shown
    assert shown["model"]["type"] == "resnet" and shown["model"]["width"] == 32
    assert load_document(path)["model"]["type"] == "resnet"


# ---- the shipped presets --------------------------------------------------------------------


def test_the_presets_cover_models_training_and_csv_dialects():
    names = preset_names()
    for name in ("models/mlp", "models/mlp_embeddings", "models/resnet", "models/ft_transformer"):
        assert name in names
    assert {"training/fast", "training/default", "training/thorough"} <= set(names)
    assert any(name.startswith("data/") for name in names)
    # the checkout's configs/ is the installed presets' folder
    top = Path(__file__).resolve().parents[2] / "configs"
    assert top.resolve() == presets_folder().resolve()


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_validates_against_the_schema(tmp_path: Path, name: str):
    written = yaml.safe_load((presets_folder() / f"{name}.yaml").read_text())
    assert set(written) - {"extends"} <= set(Config.model_fields), "a preset holds config keys"
    base = {**BASE, "data": {"train": "t.csv", "csv": {"columns": ["y", "z"]}}}
    jsonschema.validate(merge_documents(base, written), json_schema())  # as an editor sees it
    path = _write(tmp_path / "config.yaml", {"extends": [name], **base})
    config = load_config(path)
    resolved = dotted_items(load_document(path))
    for key, value in dotted_items(written).items():  # what it says is what the config holds
        if key != "extends":
            assert resolved[key] == value
    assert Config.model_validate(yaml.safe_load(config_to_yaml(config))) == config


def test_the_json_schema_takes_extends_in_place_of_the_required_keys():
    schema = json_schema()
    jsonschema.validate({"extends": ["../base.yaml"], "seed": 3}, schema)
    jsonschema.validate({"extends": "models/mlp", **BASE}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"seed": 3}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"extends": [3], **BASE}, schema)


@pytest.mark.slow
def test_a_preset_resolves_by_name_from_an_installed_wheel(tmp_path: Path):
    """Built as a wheel and installed elsewhere, away from the checkout: the presets go along."""
    repo = Path(__file__).resolve().parents[2]
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(repo)], check=True)
    (wheel,) = wheels.glob("mlcli-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    _write(elsewhere / "config.yaml", {"extends": ["models/resnet", "data/tsv"], **BASE})
    script = (
        "import mlcli, sys; from mlcli.config.loading import load_config; "
        "config = load_config('config.yaml'); "
        "print(mlcli.__file__, config.model.type, repr(config.data.csv.delimiter))"
    )
    environment = {**os.environ, "PYTHONPATH": str(site)}
    found = subprocess.run(
        [sys.executable, "-c", script],
        cwd=elsewhere,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert found[0].startswith(str(site)), "the installed copy, not the checkout"
    assert found[1:] == ["resnet", "'\\t'"]
