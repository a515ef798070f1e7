"""A task's result as HTML: Markdown with raw HTML off, safe links, highlighted code.

A result is text a model wrote from a prompt anyone might have influenced (pages it read,
say), so it is untrusted: raw HTML in it is shown as text, never passed through; links
keep only web and mail schemes; images are not loaded; code blocks are coloured
server-side by Pygments (CSS classes, office/static/office/pygments.css), so the page
needs no JavaScript to read.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

register = template.Library()

# Schemes a link or image in a result may use; anything else (javascript:, data:,
# vbscript:, file:) is dropped and the text kept.
SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
# One formatter: CSS classes under `.highlight`, no inline styles.
_FORMATTER = HtmlFormatter(nowrap=True)


def _code_html(code: str, lang: str, _attrs: str) -> str:
    """A fenced block's body coloured by the lexer its info string names; plain when it
    names none Pygments knows. Returned wrapped, so markdown-it uses it as it is."""
    name = lang.strip().split(maxsplit=1)[0] if lang.strip() else ""
    try:
        lexer = get_lexer_by_name(name, stripnl=False) if name else None
    except ClassNotFound:
        lexer = None
    body = highlight(code, lexer, _FORMATTER) if lexer is not None else escape(code)
    language = f' data-lang="{escape(name)}"' if name else ""
    return f'<pre class="highlight"{language}><code>{body}</code></pre>\n'


def _link_allowed(url: str) -> bool:
    """Relative links and the safe schemes pass; markdown-it has already normalised
    the URL (entities decoded, percent-encoded), so a scheme cannot hide."""
    scheme = urlsplit(url.strip()).scheme.lower()
    return not scheme or scheme in SAFE_SCHEMES


def _renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "highlight": _code_html})
    md.enable(["table", "strikethrough"])
    # An image loads by itself when the page opens: a result that read a hostile page
    # could carry the prompt out in an image URL. Image syntax stays text.
    md.disable("image")
    md.validateLink = _link_allowed

    def link_open(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        # The model's links point anywhere: they must not pass the page's referrer or
        # window to the target, nor lend it the office's ranking.
        tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
        return str(renderer.renderToken(tokens, idx, options, env))

    md.add_render_rule("link_open", link_open)
    return md


_MARKDOWN = _renderer()


def markdown_html(text: str) -> SafeString:
    """The HTML of a Markdown text, safe to put in a page as it is (see the module)."""
    return mark_safe(_MARKDOWN.render(text or ""))  # noqa: S308  raw HTML is off


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    """`{{ task.result|markdown }}`: the result rendered, raw HTML shown as text."""
    return markdown_html(text)
