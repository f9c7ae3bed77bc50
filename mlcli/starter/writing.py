"""Writing a config as commented YAML: every value `mlcli init` guessed carries its reason.

PyYAML writes each value (so quoting is always right) and this module lays the lines out with
their comments; the result is parsed back and validated before `mlcli init` writes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mlcli.starter.profiling import ColumnProfile, InitReport

_COMMENT_COLUMN = 40
Lines = list[tuple[str, Any, str]]  # (key, value, comment) of a section


def scalar(value: Any) -> str:
    """A value as one line of YAML flow style (quoted where YAML needs it)."""
    text = yaml.safe_dump(
        value, default_flow_style=True, width=1 << 30, allow_unicode=True, sort_keys=False
    )
    return text.removesuffix("\n").removesuffix("\n...").strip()


def line(indent: int, key: Any, value: Any = None, comment: str = "") -> str:
    """`key: value  # comment`, the comment aligned; a None value opens a mapping."""
    text = " " * indent + scalar(key) + ":" + ("" if value is None else " " + scalar(value))
    if comment:
        text = text.ljust(_COMMENT_COLUMN - 1) + " # " + comment
    return text


def _feature_value(profile: ColumnProfile) -> Any:
    if profile.transform != "none":
        return {"type": profile.kind, "transform": profile.transform}
    if profile.kind == "text" and profile.sequence_length:
        return {"type": "text", "sequence_length": profile.sequence_length}
    return profile.kind


def _csv_comment(key: str, value: Any, reasons: dict[str, str]) -> str:
    if key == "columns" and "header" in reasons and value:
        return "names for a file without a header line: rename them freely"
    return reasons.get(key, "")


def _data_lines(report: InitReport, train: str, inherited: dict[str, Any]) -> list[str]:
    stratified = "" if report.target.task == "regression" else ", in proportion to each class"
    lines = [
        "data:",
        line(2, "train", train),
        line(2, "validation", 0.2, f"a random 20% of the rows{stratified}"),
    ]
    preset_csv = inherited.get("data", {}).get("csv", {})
    csv = {key: value for key, value in report.csv.items() if key not in preset_csv}
    if csv:
        lines.append(line(2, "csv", None, "sniffed from the first megabyte of the file"))
        for key, value in csv.items():
            lines.append(line(4, key, value, _csv_comment(key, value, report.reasons)))
    return lines


def _section(name: str, lines: Lines, inherited: dict[str, Any]) -> list[str]:
    """A section's `key: value  # comment` lines but those a preset sets; none for a section
    whose presets set its `type` (another model family takes other keys)."""
    preset = inherited.get(name, {})
    if "type" in preset:
        return []
    kept = [line(2, key, value, comment) for key, value, comment in lines if key not in preset]
    return [f"{name}:", *kept] if kept else []


def _target_lines(report: InitReport) -> list[str]:
    target = report.target
    missing = f"; {target.missing} rows without a label are skipped" if target.missing else ""
    lines = [
        "target:",
        line(2, "column", target.name, f"the column to predict{missing}"),
        line(2, "task", target.task, target.reason),
    ]
    if target.positive_class is not None:
        lines.append(
            line(
                2,
                "positive_class",
                target.positive_class,
                "the rarer class: the model gives its probability",
            )
        )
    return lines


def _feature_lines(report: InitReport) -> list[str]:
    used = [p for p in report.columns if p.kind != "excluded"]
    excluded = [p for p in report.columns if p.kind == "excluded"]
    lines = ["features:                              # the columns the model sees, by type"]
    lines += [line(2, p.name, _feature_value(p), p.reason) for p in used]
    if excluded:
        lines.append(line(2, "exclude", None, "columns the model never sees"))
        lines += [
            ("    - " + scalar(p.name)).ljust(_COMMENT_COLUMN - 1) + " # " + p.reason
            for p in excluded
        ]
    return lines


def _batch_size(rows: int) -> int:
    for threshold, size in ((20000, 256), (5000, 128), (2000, 64)):
        if rows >= threshold:
            return size
    return 32


def _model_and_training(report: InitReport, *, streamed: bool) -> tuple[Lines, Lines]:
    """The `model:` and `training:` keys: the shipped examples' recipes, which measured best
    (docs/models-and-quality.md): classification as examples/adult, regression as
    examples/california_housing."""
    rows = report.sample_rows
    batch = ("batch_size", _batch_size(rows), f"for about {rows} rows")
    if report.target.task == "regression":
        binning = "quantile" if streamed else "tree"
        why = "quantiles (a streamed table)" if streamed else "a decision tree on the target"
        model: Lines = [
            ("hidden_units", [256, 256], "an MLP"),
            ("dropout", 0.1, ""),
            (
                "numeric_embedding",
                {"type": "piecewise_linear", "bins": 64, "dim": 24, "binning": binning},
                f"piecewise-linear numbers, bins from {why}",
            ),
            ("ensemble", 8, "8 members in one network (TabM), predictions averaged"),
        ]
        training: Lines = [
            ("epochs", 80, "at most; early stopping ends training sooner"),
            batch,
            ("learning_rate", 0.002, ""),
            ("learning_rate_schedule", "cosine", "decays to 0 over the epochs"),
            ("early_stopping", {"monitor": "val_loss", "patience": 12}, ""),
        ]
        return model, training
    periodic = {"type": "periodic", "frequencies": 16, "dim": 16, "frequency_scale": 10.0}
    model = [
        ("hidden_units", [128, 64], "the classic MLP"),
        ("dropout", 0.1, ""),
        ("numeric_embedding", periodic, "sin/cos of learned frequencies per number"),
        ("ensemble", 4, "4 members in one network (TabM), probabilities averaged"),
    ]
    training = [
        ("epochs", 50, "at most; early stopping ends training sooner"),
        batch,
        ("learning_rate", 0.001, ""),
        ("label_smoothing", 0.1, "RealMLP's default"),
        ("early_stopping", {"monitor": "val_loss", "patience": 5}, ""),
    ]
    return model, training


def render_config(
    report: InitReport,
    *,
    name: str,
    train: str,
    command: str,
    written: str,
    extends: list[str] | None = None,
    inherited: dict[str, Any] | None = None,
    streamed: bool = False,
) -> str:
    """The commented YAML text of the config `init` inferred.

    With `extends`, the config names those presets first and leaves out the keys they set
    (`inherited`: the presets merged). `streamed`: the training file is large enough to be
    streamed (`data.streaming: auto`), so a regression's bins come from quantiles, not trees.
    """
    inherited = inherited or {}
    preset_lines = (
        [line(0, "extends", extends, "merged first; the keys below win over them")]
        if extends
        else []
    )
    header = [
        f"# Written by `{command}` on {written}, from the first {report.sample_rows} rows.",
        "# Each guess carries its reason: check them, then run `mlcli train <this file>`.",
        "# Every key is described in mlcli's docs/config.md and by `mlcli config schema`.",
    ]
    model, training = _model_and_training(report, streamed=streamed)
    lines = [
        *header,
        *preset_lines,
        line(0, "name", name, "runs are written to runs/<name>/<run id>"),
        line(0, "seed", 42),
        *_data_lines(report, train, inherited),
        *_target_lines(report),
        *_feature_lines(report),
        *_section("model", model, inherited),
        *_section("training", training, inherited),
        "output:",
        line(2, "dir", "runs", "relative to the folder mlcli train runs in"),
    ]
    return "\n".join(lines) + "\n"
