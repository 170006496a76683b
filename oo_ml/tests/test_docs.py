"""The README and docs/ explain the product by themselves: every relative link
lands on a file and a heading of the repository, and nothing points at documents,
folders or issue numbers a reader of the repository cannot open."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
OUTSIDE = re.compile(r"\.\./shared|\bSPEC\b|\bSTYLE\b|\bissue \d+|#\d+\b")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchor of each heading: lower case, punctuation dropped, spaces
    as hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", page.read_text(), re.M)
    return {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings
    }


def _links(page: Path) -> list[str]:
    return [
        link
        for link in LINK.findall(page.read_text())
        if not link.startswith(("http://", "https://", "mailto:"))
    ]


def _dead(page: Path, link: str) -> bool:
    """True when ``link`` leaves the repository or misses its file or heading."""
    path, _, anchor = link.partition("#")
    target = (page.parent / path).resolve() if path else page
    if not target.exists() or ROOT not in target.parents:
        return True
    return bool(anchor) and target.suffix == ".md" and anchor not in _anchors(target)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_lands_on_a_file_and_heading(page):
    assert [link for link in _links(page) if _dead(page, link)] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_points_outside_the_repository(page):
    text = page.read_text()
    # Anchors inside links (docs/x.md#a-heading) are not issue numbers.
    assert OUTSIDE.findall(LINK.sub("]()", text)) == []


def test_the_check_finds_a_dead_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path.parent)
    page = tmp_path / "a.md"
    page.write_text("# Server choice (2026-12-04)\n\n[here](a.md#server-choice)\n")
    assert _links(page) == ["a.md#server-choice"]
    assert _dead(page, "a.md#server-choice")
    assert _dead(page, "b.md")
    assert not _dead(page, "a.md#server-choice-2026-12-04")
