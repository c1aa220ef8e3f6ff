"""The project's references to its method description resolve.

Code, tests and README cite docs/METHOD.md by anchor (``docs/METHOD.md#5-objective``, or
``#8-detection-map`` beside one); every such anchor must be a heading of that page, and
nothing may cite the spec the project was written from, which is not in the repository.
"""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
METHOD = REPO / "docs" / "METHOD.md"
SOURCES = [p for pattern in ("*.py", "*/*.py", "*.md", "*/*.md", "*.sh")
           for p in REPO.glob(pattern) if ".git" not in p.parts]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def method_anchors() -> set:
    return {github_anchor(line.lstrip("#")) for line in METHOD.read_text().splitlines() if line.startswith("#")}


def test_github_anchor_matches_githubs_rule():
    assert github_anchor(" 5. Objective") == "5-objective"
    assert github_anchor("11. Golden outputs") == "11-golden-outputs"
    assert github_anchor("1. Cross-modal attention") == "1-cross-modal-attention"


def cited_anchors(text: str) -> list:
    return re.findall(r"METHOD\.md#([\w-]+)", text) + re.findall(r"``#(\d+-[\w-]+)``", text) \
        + re.findall(r"\]\(#(\d+-[\w-]+)\)", text)


def test_every_cited_section_of_the_method_page_exists():
    anchors = method_anchors()
    assert {"3-scl", "5-objective", "7-proposals", "8-detection-map"} <= anchors
    cited = {(p.relative_to(REPO).as_posix(), a) for p in SOURCES for a in cited_anchors(p.read_text())}
    assert len(cited) > 30, "the references were not found: the pattern no longer matches how they are written"
    broken = sorted((path, a) for path, a in cited if a not in anchors)
    assert not broken, f"references to sections that docs/METHOD.md does not have: {broken}"


@pytest.mark.parametrize("stale", [r"spec section", r"STCL-NET\.md", r"shared/docs"])
def test_nothing_cites_the_spec_outside_the_repository(stale):
    found = [f"{p.relative_to(REPO)}:{n}" for p in SOURCES if p.name != "test_docs.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(stale, line)]
    assert not found, f"cite docs/METHOD.md#<section> instead of the spec: {found}"
