"""Web pages the sandbox serves, so page fetching and extraction run over a real socket.

- `GET /_sandbox/pages/article`: an HTML article inside navigation, a sidebar and a footer
- `GET /_sandbox/pages/plain`: the same article as text/plain
- `GET /_sandbox/pages/big[?kib=N]`: HTML of N KiB (default 256), streamed without a length
- `GET /_sandbox/pages/binary`: application/octet-stream
- `GET /_sandbox/pages/redirect?to=URL[&status=302][&hops=N]`: a redirect to URL, after
  N-1 redirects to itself (default N=1)

Every page also takes `latency=SECONDS` (at most 60) to answer late.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

PREFIX = "/_sandbox/pages"
MAX_LATENCY_SECONDS = 60.0
DEFAULT_BIG_KIB = 256
MAX_BIG_KIB = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_HOPS = 50

ARTICLE_TITLE = "Tide pools of the northern coast"
ARTICLE_PARAGRAPHS = (
    "Tide pools form where the sea retreats twice a day and leaves water trapped in rock "
    "hollows. The animals that live there must survive both crashing waves and hours of "
    "warm, still water.",
    "Sea anemones close into jelly-like knobs when the tide goes out, holding water inside "
    "their bodies so that they do not dry out before the sea returns.",
    "Hermit crabs trade shells as they grow. When a larger shell appears, several crabs "
    "may line up by size and swap in turn, each moving into the shell the next one left.",
    "Visitors can help by stepping only on bare rock, returning every stone they lift to "
    "where it was, and leaving the animals in the water where they belong.",
)
BOILERPLATE_NAV = ("Home", "Coastal guides", "Birding", "Shop", "Sign in")
BOILERPLATE_FOOTER = "Copyright 2026 Shoreline Weekly. All rights reserved. Privacy policy"


def add_page_routes(router: web.UrlDispatcher) -> None:
    """Register the test pages; call before any catch-all route."""
    router.add_get(f"{PREFIX}/article", _article)
    router.add_get(f"{PREFIX}/plain", _plain)
    router.add_get(f"{PREFIX}/big", _big)
    router.add_get(f"{PREFIX}/binary", _binary)
    router.add_get(f"{PREFIX}/redirect", _redirect)


def article_html() -> str:
    """Return the article page: the article, wrapped in a site's usual boilerplate."""
    nav = "".join(f'<li><a href="/{item.lower()}">{item}</a></li>' for item in BOILERPLATE_NAV)
    paragraphs = "".join(f"<p>{text}</p>" for text in ARTICLE_PARAGRAPHS)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{ARTICLE_TITLE} | Shoreline Weekly</title>"
        "<script>window.analytics = {track: function () {}};</script>"
        "<style>body { font-family: serif; }</style></head><body>"
        f"<header><nav><ul>{nav}</ul></nav></header>"
        f"<main><article><h1>{ARTICLE_TITLE}</h1>"
        "<p class='byline'>By Mara Quinn, 3 June 2026</p>"
        f"{paragraphs}</article>"
        "<aside><h2>Most read</h2><ul><li><a href='/a'>Ten best beaches</a></li>"
        "<li><a href='/b'>Gull or tern?</a></li></ul></aside></main>"
        f"<footer><p>{BOILERPLATE_FOOTER}</p></footer></body></html>"
    )


async def _latency(request: web.Request) -> None:
    raw = request.query.get("latency", "0")
    try:
        seconds = float(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"latency must be a number of seconds, got {raw!r}") from None
    if not 0 <= seconds <= MAX_LATENCY_SECONDS:
        raise web.HTTPBadRequest(text=f"latency must be between 0 and {MAX_LATENCY_SECONDS:g}")
    if seconds:
        await asyncio.sleep(seconds)


async def _article(request: web.Request) -> web.Response:
    await _latency(request)
    return web.Response(text=article_html(), content_type="text/html", charset="utf-8")


async def _plain(request: web.Request) -> web.Response:
    await _latency(request)
    text = f"{ARTICLE_TITLE}\n\n" + "\n\n".join(ARTICLE_PARAGRAPHS) + "\n"
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def _big(request: web.Request) -> web.StreamResponse:
    raw = request.query.get("kib", str(DEFAULT_BIG_KIB))
    if not raw.isdigit() or not 0 < int(raw) <= MAX_BIG_KIB:
        raise web.HTTPBadRequest(text=f"kib must be a whole number from 1 to {MAX_BIG_KIB}")
    await _latency(request)
    # No Content-Length (chunked), so a client can only enforce its limit while reading.
    response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
    await response.prepare(request)
    line = b"<p>" + b"filler " * 145 + b"x</p>\n"  # 1 KiB
    try:
        await response.write(b"<!DOCTYPE html><html><body>\n")
        for _ in range(int(raw)):
            await response.write(line)
        await response.write(b"</body></html>\n")
        await response.write_eof()
    except ConnectionError:
        pass  # the client stopped reading at its limit, as it should
    return response


async def _binary(request: web.Request) -> web.Response:
    await _latency(request)
    return web.Response(body=bytes(range(256)) * 16, content_type="application/octet-stream")


async def _redirect(request: web.Request) -> web.Response:
    location = request.query.get("to", "")
    status_raw = request.query.get("status", "302")
    hops_raw = request.query.get("hops", "1")
    if not location:
        raise web.HTTPBadRequest(text="redirect needs ?to=URL")
    if not status_raw.isdigit() or int(status_raw) not in REDIRECT_STATUSES:
        raise web.HTTPBadRequest(text=f"status must be one of {sorted(REDIRECT_STATUSES)}")
    if not hops_raw.isdigit() or not 1 <= int(hops_raw) <= MAX_HOPS:
        raise web.HTTPBadRequest(text=f"hops must be a whole number from 1 to {MAX_HOPS}")
    await _latency(request)
    hops = int(hops_raw)
    if hops > 1:
        # A chain of redirects to this same route, for clients that limit them.
        location = str(request.rel_url.update_query(hops=str(hops - 1)))
    return web.Response(status=int(status_raw), headers={"Location": location})
