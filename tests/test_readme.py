"""The README stays an entry point, and no relative link in it or in docs/ points nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 260
PAGES = sorted([README, *(ROOT / "docs").glob("*.md")])

# [text](target) and ![alt](target), the target up to a space (a "title") or the parenthesis.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


def _prose_lines(text: str, *, blank_code: bool = True) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, inline code spans blanked out unless told."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, re.sub(r"`[^`]*`", "``", line) if blank_code else line))
    return lines


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    """The anchors of the headings of a Markdown page."""
    lines = _prose_lines(page.read_text(encoding="utf-8"), blank_code=False)
    return {_anchor(line.lstrip("#")) for _, line in lines if line.startswith("#")}


def broken_links(page: Path) -> list[str]:
    """Each relative link of `page` whose file (or heading, after `#`) does not exist."""
    problems = []
    for number, line in _prose_lines(page.read_text(encoding="utf-8")):
        for target in _LINK.findall(line):
            if _EXTERNAL.match(target):
                continue
            path, _, fragment = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT) if page.is_relative_to(ROOT) else page}:{number}"
            if not resolved.exists():
                problems.append(f"{where}: {target} -> no such file {resolved}")
            elif fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved):
                problems.append(f"{where}: {target} -> no heading #{fragment} in {resolved.name}")
    return problems


def test_the_readme_is_an_entry_point_not_a_manual():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines, at most {MAX_README_LINES}: move the detail to docs/"
    )


def test_the_docs_folder_has_its_index_and_guides():
    names = {page.name for page in PAGES if page.parent.name == "docs"}
    assert {"README.md", "cli.md", "config.md", "architecture.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_that_exists(page):
    assert broken_links(page) == []


def test_the_docs_index_links_every_page():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    linked = {Path(target.partition("#")[0]).name for target in _LINK.findall(index)}
    missing = sorted(p.name for p in PAGES if p.parent.name == "docs" and p.name != "README.md")
    assert [name for name in missing if name not in linked] == []


def test_a_broken_link_is_reported(tmp_path):
    (tmp_path / "there.md").write_text("# A heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#a-heading) [web](https://example.com)\n"
        "```\n[in code](nowhere.md)\n```\n"
        "`[inline code](nowhere.md)` and [gone](missing.md) and [bad anchor](there.md#nope)\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert len(problems) == 2
    assert "missing.md" in problems[0] and "page.md:5" in problems[0]
    assert "no heading #nope" in problems[1]
