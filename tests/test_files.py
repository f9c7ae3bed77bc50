"""`mlcli.files`: atomic folders, and what `--force` may replace (never `/`, home, the working
directory or its parents, links, files, or a folder holding anything its writer did not put)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcli import files
from mlcli.errors import ConfigError, RunError


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        (lambda cwd: Path("."), "the working directory"),
        (lambda cwd: cwd, "the working directory"),
        (lambda cwd: cwd.parent, "a parent of the working directory"),
        (lambda cwd: Path(".."), "a parent of the working directory"),
        (lambda cwd: Path("/"), "the root folder"),
        (lambda cwd: Path.home(), "the home directory"),
    ],
)
def test_protected_folders_are_never_replaced(tmp_path, monkeypatch, where, reason):
    working = tmp_path / "project"
    working.mkdir()
    monkeypatch.chdir(working)
    with pytest.raises(ConfigError, match=reason):
        files.check_replaceable(where(working.resolve()), owned=(), what="an export")


def test_a_folder_holding_anything_unlisted_is_refused_and_named(tmp_path):
    folder = tmp_path / "out"
    (folder / "variables").mkdir(parents=True)
    (folder / "variables" / "v.index").write_text("x")
    (folder / "export.json").write_text("{}")
    files.check_replaceable(folder, owned=["export.json", "variables/"], what="an export")
    (folder / "notes.txt").write_text("mine")
    (folder / "model-a").mkdir()
    with pytest.raises(ConfigError, match=r"holds model-a/, notes.txt, which is not part of"):
        files.check_replaceable(folder, owned=["export.json", "variables/"], what="an export")
    # a listed folder name given as a plain file, or a listed file that is a folder, is foreign
    with pytest.raises(ConfigError, match="variables/"):
        files.check_replaceable(folder, owned=["export.json", "variables"], what="an export")


def test_links_and_files_are_never_replaced(tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="is a link"):
        files.check_replaceable(link, owned=(), what="an export")
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        files.check_replaceable(plain, owned=(), what="an export")


def test_atomic_directory_refuses_before_writing_anything(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "precious.txt").write_text("keep me")
    with (
        pytest.raises(RunError, match="already exists; pass --force"),
        files.atomic_directory(final),
    ):
        pytest.fail("the block ran")
    with (
        pytest.raises(ConfigError, match=r"precious\.txt"),
        files.atomic_directory(final, force=True),
    ):
        pytest.fail("the block ran")
    assert (final / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left


@pytest.mark.parametrize("force", [False, True])
def test_check_destination_refuses_as_atomic_directory_does_and_writes_nothing(tmp_path, force):
    final = tmp_path / "out"
    files.check_destination(final, force=force)  # absent: nothing to refuse
    final.mkdir()
    files.check_destination(final, force=True)  # an empty folder may be replaced
    (final / "precious.txt").write_text("keep me")
    error = RunError if not force else ConfigError
    for check in (
        lambda: files.check_destination(final, force=force),
        lambda: files.atomic_directory(final, force=force).__enter__(),
    ):
        with pytest.raises(error, match="--force" if not force else r"precious\.txt"):
            check()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out", "precious.txt"]


def test_atomic_directory_replaces_what_its_check_accepts_and_keeps_it_on_failure(tmp_path):
    final = tmp_path / "deep" / "er" / "out"  # missing parents are created
    with files.atomic_directory(final) as folder:
        (folder / "a.txt").write_text("first")
    assert (final / "a.txt").read_text() == "first"

    def accept(path: Path) -> None:
        files.check_replaceable(path, owned=["a.txt"], what="a test folder")

    with (
        pytest.raises(ValueError, match="boom"),
        files.atomic_directory(final, force=True, replaceable=accept) as folder,
    ):
        (folder / "a.txt").write_text("half")
        raise ValueError("boom")
    assert (final / "a.txt").read_text() == "first"
    with files.atomic_directory(final, force=True, replaceable=accept) as folder:
        (folder / "a.txt").write_text("second")
    assert (final / "a.txt").read_text() == "second"
    assert sorted(p.name for p in final.parent.iterdir()) == ["out"]


def test_a_parent_that_cannot_be_created_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(ConfigError, match="cannot create the folder"),
        files.atomic_directory(tmp_path / "file" / "out"),
    ):
        pytest.fail("the block ran")
