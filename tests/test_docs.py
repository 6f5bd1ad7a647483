"""The documentation is tested like code: docs/*.md and README.md are kept true here.

* Every ```model block in docs/*.md parses with :func:`shardc.parse`, and a sharded one
  (every declaration and statement pinned) also passes :func:`shardc.verify_sharded`.
  A ```model-error block must be rejected with a :class:`shardc.ShardcError`.
* Every ```python block preceded by ``<!-- test -->`` runs as written, from the
  repository root.
* Every relative Markdown link in README.md and docs/*.md points at a path that exists
  in the repository (and, for a link to a Markdown file with ``#anchor``, at a heading
  that exists there).
* No file of the repository's public parts mentions the private specification files.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import shardc

ROOT = Path(__file__).resolve().parents[1]
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))
LINKED_PAGES = [ROOT / "README.md", *DOC_PAGES]

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w-]*)")
_TEST_MARK = "<!-- test -->"


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marked: bool  # the nearest non-blank line before the fence is <!-- test -->

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, in order (fences of ``` or ~~~, any length)."""
    lines = page.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(2), m.group(3), i
        before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        blocks.append(Block(page, start + 1, lang, "\n".join(body) + "\n", before == _TEST_MARK))
        i += 1  # past the closing fence
    return blocks


ALL_BLOCKS = [b for page in DOC_PAGES for b in fenced_blocks(page)]
MODEL_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "model"]
ERROR_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "model-error"]
PYTHON_TESTS = [b for b in ALL_BLOCKS if b.lang == "python" and b.marked]


def _check(block: Block) -> shardc.Graph:
    g = shardc.parse(block.text, filename=block.where)
    if g.is_sharded:
        shardc.verify_sharded(g)
    return g


# --- (a) the examples ---------------------------------------------------------------------
def test_the_pages_have_examples() -> None:
    """Guards the extraction itself: an empty list would make the tests below vacuous."""
    pages = {b.page.name for b in MODEL_BLOCKS}
    assert {"language.md"} <= pages
    assert ERROR_BLOCKS, "docs/language.md shows errors as ```model-error blocks"
    assert any(b.page.name == "api.md" for b in PYTHON_TESTS), "docs/api.md has a <!-- test --> example"


@pytest.mark.parametrize("block", MODEL_BLOCKS, ids=lambda b: b.where)
def test_model_block_is_accepted(block: Block) -> None:
    try:
        _check(block)
    except shardc.ShardcError as err:
        pytest.fail(f"the ```model block at {block.where} is rejected:\n{err.render()}")


@pytest.mark.parametrize("block", ERROR_BLOCKS, ids=lambda b: b.where)
def test_model_error_block_is_rejected(block: Block) -> None:
    with pytest.raises(shardc.ShardcError) as info:
        _check(block)
    # A located error: it names the page's block, a line and a column.
    assert info.value.filename == block.where
    assert info.value.line is not None and info.value.col is not None


def test_sharded_examples_are_sharded() -> None:
    """The page's sharded examples really are sharded programs (so the verifier ran on them)."""
    sharded = [b for b in MODEL_BLOCKS if _check(b).is_sharded]
    assert len(sharded) >= 2, [b.where for b in sharded]


@pytest.mark.parametrize("block", PYTHON_TESTS, ids=lambda b: b.where)
def test_python_example_runs(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the examples open examples/*.model by relative path
    code = compile(block.text, block.where, "exec")
    exec(code, {"__name__": "__doc_example__"})


# --- (b) links and references -------------------------------------------------------------
_LINK = re.compile(r"(?<!\!)\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMAGE = re.compile(r"!\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose(page: Path) -> list[tuple[int, str]]:
    """(line number, text) of the page outside fenced blocks, with inline code removed."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for n, line in enumerate(page.read_text(encoding="utf-8").split("\n"), 1):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(2)
            continue
        if fence is not None:
            if re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", line):
                fence = None
            continue
        out.append((n, _INLINE_CODE.sub("", line)))
    return out


def relative_links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every link and image on ``page`` that is not a URL or a bare anchor."""
    links = []
    for n, text in _prose(page):
        for pattern in (_LINK, _IMAGE):
            for m in pattern.finditer(text):
                target = m.group(1)
                if not _SCHEME.match(target) and not target.startswith("#"):
                    links.append((n, target))
    return links


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|<[^>]+>", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of the headings of a Markdown page (duplicates numbered as GitHub does)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in _prose_with_code(page):
        m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def _prose_with_code(page: Path) -> list[tuple[int, str]]:
    """Like :func:`_prose` but keeping inline code (headings' anchors include its text)."""
    lines = page.read_text(encoding="utf-8").split("\n")
    keep = {n for n, _ in _prose(page)}
    return [(n, lines[n - 1]) for n in sorted(keep)]


def _broken_links(page: Path) -> list[str]:
    broken = []
    for n, target in relative_links(page):
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve()
        where = f"{page.relative_to(ROOT)}:{n}: ({target})"
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{where} leaves the repository")
        elif not resolved.exists():
            broken.append(f"{where} points at {resolved.relative_to(ROOT)}, which does not exist")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{where} names no heading of {resolved.relative_to(ROOT)}")
    return broken


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = _broken_links(page)
    assert not broken, "broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_in_page_anchors_resolve(page: Path) -> None:
    """Each docs page's own table of contents points at its headings."""
    names = anchors(page)
    missing = []
    for n, text in _prose(page):
        for m in _LINK.finditer(text):
            if m.group(1).startswith("#") and m.group(1)[1:] not in names:
                missing.append(f"{page.relative_to(ROOT)}:{n}: {m.group(1)}")
    assert not missing, "links to headings that do not exist:\n" + "\n".join(missing)


def test_link_checker_sees_a_broken_link(tmp_path: Path) -> None:
    """The checker itself: a link to a missing file is reported, a good one is not."""
    page = ROOT / "docs" / "language.md"
    links = relative_links(page)
    assert any(t.startswith("../grammars/model.lark") for _, t in links)
    fake = tmp_path / "page.md"
    fake.write_text("[ok](#x) [web](https://example.com) `[code](nowhere.md)`\n[bad](nowhere.md)\n",
                    encoding="utf-8")
    assert relative_links(fake) == [(2, "nowhere.md")]


_PRIVATE = re.compile(r"LANGUAGE\.md|PAPER\.md|DESIGN\.md|shared/")
_SCANNED = ["README.md", "docs", "shardc", "examples", "grammars", "benchmarks", "tests", "pyproject.toml", ".ci"]


def _scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in _SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in candidates if "__pycache__" not in p.parts and p.suffix not in (".pyc", ".png")
                  and p != Path(__file__).resolve()]
    return files


def test_scan_covers_the_public_parts() -> None:
    names = {p.relative_to(ROOT).parts[0] for p in _scanned_files()}
    assert {"README.md", "docs", "shardc", "examples", "grammars", "benchmarks"} <= names


def test_no_references_to_the_private_specification() -> None:
    """The repository stands alone: nothing sends a reader to a file outside it."""
    assert _PRIVATE.search("see LANGUAGE.md, Errors") and not _PRIVATE.search("see docs/language.md")
    hits = []
    for path in _scanned_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.split("\n"), 1):
            if _PRIVATE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, f"{len(hits)} mentions of the private specification:\n" + "\n".join(hits)


def test_the_api_page_lists_exactly_what_is_exported() -> None:
    page = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = page[page.index("## 10. Everything exported"):]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| for")]
    listed = [name for row in rows for name in re.findall(r"`([A-Za-z_]+)`", row.split("|")[2])]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(shardc.__all__), set(listed) ^ set(shardc.__all__)
