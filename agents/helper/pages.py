"""The readable text of a web page: trafilatura first, a plain tag strip when it finds none."""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser

import trafilatura

# Elements whose content is never page text.
INVISIBLE = frozenset({"script", "style", "noscript", "template", "svg", "iframe"})
# Elements that end a line of text when stripped.
_BLOCKS_TEXT = """
    address article aside blockquote br dd div dl dt fieldset figcaption figure footer
    form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section table td th tr ul
"""
BLOCKS = frozenset(_BLOCKS_TEXT.split())

# A tag, a comment or a doctype: the text is markup, not plain text.
MARKUP = re.compile(r"<(?:[a-zA-Z][\w-]*|/[a-zA-Z][\w-]*|!)[^>]*>")
WHITESPACE = re.compile(r"\s+")

# trafilatura logs every page it finds nothing in at WARNING: for us that is a normal
# outcome (the strip below answers), not something an operator should see.
logging.getLogger("trafilatura").setLevel(logging.ERROR)


def page_text_extract(*, html: str, url: str) -> str:
    """Return the main text of a page without navigation, footers and ads; never HTML.

    trafilatura (https://trafilatura.readthedocs.io/) finds the article; when it finds
    nothing (a tiny page, a plain-text body) every visible text is kept instead. Returns ""
    for a page without text.
    """
    if not html.strip():
        return ""
    extracted = trafilatura.extract(
        html, url=url or None, include_comments=False, include_tables=True
    )
    if extracted and extracted.strip():
        return extracted.strip()
    if not MARKUP.search(html):
        # A text/plain page: its line breaks are its structure, keep them.
        lines = (" ".join(line.split()) for line in html.splitlines())
        return "\n".join(line for line in lines if line)
    return text_strip(html=html)


def text_strip(*, html: str) -> str:
    """Return every visible text of an HTML document, one block per line."""
    parser = _TextCollector()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in INVISIBLE:
            self._hidden += 1
        elif tag in BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in INVISIBLE:
            self._hidden = max(0, self._hidden - 1)
        elif tag in BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            # Source line breaks inside a paragraph are layout; only blocks end lines.
            self.parts.append(WHITESPACE.sub(" ", data))
