"""Project Gutenberg boilerplate stripping: a book's text without its license header and footer."""

from __future__ import annotations

import re

__all__ = ["strip_gutenberg_batch", "strip_gutenberg_lines"]

# Project Gutenberg markers. Modern files: "*** START OF THIS/THE PROJECT GUTENBERG EBOOK ... ***" and
# "*** END OF ...". A few pre-2003 files only have the legal "small print" header ending in
# "*END*THE SMALL PRINT!..." and a closing "End of the Project Gutenberg Etext ..." line: those are
# used only when the modern marker is absent.
_PG_START = re.compile(r"^\s*\*{3}\s*START OF", re.IGNORECASE)
_PG_END = re.compile(r"^\s*\*{3}\s*END OF", re.IGNORECASE)
_PG_LEGACY_START = re.compile(r"^\s*\*END\*?\s*THE SMALL PRINT", re.IGNORECASE)
_PG_LEGACY_END = re.compile(r"^\s*End of (the )?Project Gutenberg", re.IGNORECASE)


def strip_gutenberg_lines(text: str) -> list[str]:
    """Return the lines of one Project Gutenberg book without its license header and footer.

    Drops every line up to and including the ``*** START OF`` marker and from the ``*** END OF`` marker
    on (the first END marker after the START marker). A book without markers is returned whole.
    """
    lines = text.splitlines()

    def first(pattern: re.Pattern[str], begin: int) -> int | None:
        return next((i for i in range(begin, len(lines)) if pattern.match(lines[i])), None)

    start = first(_PG_START, 0)
    if start is None:
        start = first(_PG_LEGACY_START, 0)
    body_start = 0 if start is None else start + 1
    end = first(_PG_END, body_start)
    if end is None:
        end = first(_PG_LEGACY_END, body_start)
    return lines[body_start : len(lines) if end is None else end]


def strip_gutenberg_batch(batch: dict[str, list[str]]) -> dict[str, list[str]]:
    """Batched ``datasets.map``: one ``text`` row per book in, one row per body line out."""
    return {"text": [line for doc in batch["text"] if doc for line in strip_gutenberg_lines(doc)]}
