"""The fenced code blocks of README.md and docs/*.md, read with Sybil's Markdown lexers,
each with the marker written just above it (an HTML comment, invisible on the page):

    <!-- test: ID -->            the block runs as written: tests/test_docs.py says how (ID)
    <!-- test: skip REASON -->   it cannot run here, and why (ImageNet, a GPU, hours)

A marker travels with its block, so a block keeps its test wherever it moves. The slow
tier runs every ID (tests/test_docs.py); `.ci/run` runs `two-commands` in a fresh clone
and venv: `python tests/docs_blocks.py two-commands` prints it."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import sys

from sybil import Document, Region
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: its marker's ID ("" if unmarked) or skip reason, where it is, its text."""

    id: str
    skip: str
    path: str  # relative to the checkout
    line: int
    language: str
    source: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


class BlockParser:
    """A Sybil parser: a Region per fenced block, parsed into a `Block` with the
    `<!-- test: ... -->` marker that ends just above it (only blank space between)."""

    fences = FencedCodeBlockLexer(language=r"[\w+-]*")
    markers = DirectiveInHTMLCommentLexer(directive="test", arguments=r".+?")

    def __call__(self, document: Document):
        marks = {}
        for region in self.markers(document):
            end = re.compile(r"-+>\s*").match(document.text, region.end).end()  # the region ends before -->
            marks[end] = region.lexemes["arguments"].strip()
        for region in self.fences(document):
            mark = marks.get(region.start, "")
            kind, _, rest = mark.partition(" ")
            line = document.text.count("\n", 0, region.start) + 1
            block = Block(
                id="" if kind == "skip" else mark,
                skip=rest.strip() if kind == "skip" else "",
                path=os.path.relpath(document.path, ROOT),
                line=line,
                language=region.lexemes["language"],
                source=str(region.lexemes["source"]),
            )
            yield Region(region.start, region.end, parsed=block)


def documents(root: str = ROOT) -> list[str]:
    """README.md and docs/*.md of the checkout at `root`."""
    return [os.path.join(root, "README.md"), *sorted(glob.glob(os.path.join(root, "docs", "*.md")))]


def blocks(root: str = ROOT) -> list[Block]:
    """Every fenced block of `documents(root)`, in order."""
    parser = BlockParser()
    return [example.parsed for path in documents(root) for example in Document.parse(path, parser)]


def block(block_id: str, root: str = ROOT) -> Block:
    """The one block marked `block_id` (the first if it is written in several places)."""
    found = [b for b in blocks(root) if b.id == block_id]
    if not found:
        raise KeyError(f"no block is marked <!-- test: {block_id} --> in README.md or docs/*.md")
    return found[0]


if __name__ == "__main__":
    sys.stdout.write(block(sys.argv[1]).source)
