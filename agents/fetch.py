"""Fetch a web page that a task names, without letting the URL reach inside the office.

A task's URL comes from a person or an agent, and the worker that fetches it sits on the
office's network: next to the database, the broker, a local model server and, in a cloud,
the instance metadata service. So, like healthchecks' `hc/lib/curl.py`, this is one thin
wrapper with a private-address block and readable errors:

- only http and https; the host is resolved once and **every** address it resolves to
  must be public (or allowed by ROSTER_FETCH_ALLOW), and the connection goes to that
  checked address (the Host header and TLS server name carry the name), so a DNS answer
  that changes between check and connect (rebinding) cannot redirect it;
- redirects are followed by hand, at most five, each hop checked like the first;
- one deadline (ROSTER_FETCH_TIMEOUT) covers every hop and the body, the body is read
  as a stream and abandoned past ROSTER_FETCH_MAX_BYTES, and only HTML or plain text is
  accepted;
- the environment's proxy settings are ignored: a proxy would connect to an address we
  never checked.
"""

from __future__ import annotations

import codecs
import functools
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urljoin

import httpx
from django.conf import settings

from agents.providers.http import USER_AGENT

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ACCEPTED_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/plain"})
ACCEPT_HEADER = "text/html,application/xhtml+xml;q=0.9,text/plain;q=0.8"
CHUNK_BYTES = 64 * 1024
# Where an HTML page without a charset in its Content-Type declares one.
META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.I)
META_CHARSET_WINDOW = 4096

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# NAT64 (RFC 6052) carries an IPv4 address in its last 32 bits.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class FetchErrorCode(StrEnum):
    BAD_URL = "bad_url"
    BLOCKED_ADDRESS = "blocked_address"
    DNS_FAILED = "dns_failed"
    CONNECT_FAILED = "connect_failed"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    NOT_HTML = "not_html"
    HTTP_ERROR = "http_error"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    NETWORK_ERROR = "network_error"


class FetchError(Exception):
    """A page that was not fetched: a stable `code` and a message fit for a task's page."""

    def __init__(self, code: FetchErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class FetchedPage:
    url: str  # as asked for
    final_url: str  # after redirects
    content_type: str  # media type, lower case, without parameters: "text/html"
    text: str  # the body decoded: HTML for HTML pages, else plain text
    bytes_read: int  # body bytes after content decoding (what the size limit counts)

    @property
    def is_html(self) -> bool:
        """Return True when the body is HTML (text/html or application/xhtml+xml)."""
        return self.content_type != "text/plain"


def page_fetch(*, url: str) -> FetchedPage:
    """GET a public web page, following up to five redirects, and return its decoded body.

    Raises FetchError with code bad_url, blocked_address, dns_failed, connect_failed,
    timeout, too_large, not_html, http_error, too_many_redirects or network_error.
    """
    allowed = AllowList.from_entries(settings.ROSTER_FETCH_ALLOW)
    max_bytes: int = settings.ROSTER_FETCH_MAX_BYTES
    timeout: float = settings.ROSTER_FETCH_TIMEOUT
    deadline = time.monotonic() + timeout
    current = url
    with httpx.Client(
        trust_env=False,
        follow_redirects=False,
        verify=_ssl_context(),
        headers={"User-Agent": USER_AGENT, "Accept": ACCEPT_HEADER},
    ) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            target = _target_parse(current)
            addresses = _addresses_checked(target, allowed)
            hop = _hop_get(client, target, addresses, deadline=deadline, max_bytes=max_bytes)
            if isinstance(hop, _Redirect):
                current = hop.location
                continue
            return FetchedPage(
                url=url,
                final_url=str(target),
                content_type=hop.content_type,
                text=hop.text,
                bytes_read=hop.bytes_read,
            )
    raise FetchError(
        FetchErrorCode.TOO_MANY_REDIRECTS,
        f"{url} redirected more than {MAX_REDIRECTS} times (last to {current})",
    )


# --- Which addresses may be fetched -----------------------------------------------------


@dataclass(frozen=True)
class AllowList:
    """ROSTER_FETCH_ALLOW: networks, exact host names, and ".domain" suffixes."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()  # ".example.com" allows example.com and its subdomains

    @classmethod
    def from_entries(cls, entries: Sequence[str]) -> AllowList:
        """Return the allow list of CIDRs and host names (settings validated them)."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        domains: list[str] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if entry.startswith("."):
                    domains.append(entry)
                else:
                    hosts.add(entry.rstrip("."))
        return cls(networks=tuple(networks), hosts=frozenset(hosts), domains=tuple(domains))

    def allows_host(self, host: str) -> bool:
        """Return True when the host name itself is allowed, whatever it resolves to."""
        host = host.lower().rstrip(".")
        return host in self.hosts or any(
            host == domain[1:] or host.endswith(domain) for domain in self.domains
        )

    def allows_address(self, address: IPAddress) -> bool:
        """Return True when the address lies in an allowed network."""
        return any(address in network for network in self.networks)


def address_block_reason(address: IPAddress) -> str:
    """Return what makes an address non-public ("a loopback address"...), or "" if public.

    IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by the
    IPv4 address inside.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_block_reason(embedded)
            return f"an IPv6 form of {embedded}, {inner}" if inner else ""
    for flag, kind in (
        ("is_loopback", "a loopback"),
        ("is_unspecified", "an unspecified"),
        ("is_link_local", "a link-local"),
        ("is_multicast", "a multicast"),
        ("is_private", "a private"),
        ("is_reserved", "a reserved"),
    ):
        if getattr(address, flag):
            return f"{kind} address"
    if not address.is_global:
        # Shared (carrier-grade NAT), documentation and benchmarking ranges, among others.
        return "a non-public address"
    return ""


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    literal: bool  # the host is an IP address

    def __str__(self) -> str:
        return str(self.url)


def _target_parse(url: str) -> _Target:
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchError(FetchErrorCode.BAD_URL, f"{url!r} is not a valid URL: {exc}") from exc
    if not parsed.scheme:
        raise FetchError(FetchErrorCode.BAD_URL, f"{url!r} is not an absolute http(s) URL")
    if parsed.scheme not in ("http", "https"):
        raise FetchError(
            FetchErrorCode.BAD_URL,
            f"only http and https URLs are fetched, not {parsed.scheme} ({url})",
        )
    if not parsed.raw_host:
        raise FetchError(FetchErrorCode.BAD_URL, f"{url} has no host")
    if parsed.userinfo:
        raise FetchError(
            FetchErrorCode.BAD_URL, f"URLs with a user name or password are not fetched ({url})"
        )
    host = parsed.raw_host.decode("ascii")
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return _Target(url=parsed.copy_with(fragment=None), host=host, port=port, literal=literal)


def _addresses_checked(target: _Target, allowed: AllowList) -> list[IPAddress]:
    """Resolve the host and return its addresses, all of them fetchable, in resolver order.

    Raises FetchError (dns_failed, blocked_address).
    """
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(
            FetchErrorCode.DNS_FAILED, f"could not resolve {target.host}: {exc}"
        ) from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canonical, sockaddr in infos:
        # Scope ids ("fe80::1%eth0") are dropped: link-local is refused anyway.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if allowed.allows_host(target.host):
        return addresses
    for address in addresses:
        kind = address_block_reason(address)
        if kind and not allowed.allows_address(address):
            subject = f"{address} is" if target.literal else f"{target.host} resolves to {address},"
            raise FetchError(
                FetchErrorCode.BLOCKED_ADDRESS,
                f"refused to fetch {target}: {subject} {kind}. Only public addresses are "
                "fetched unless ROSTER_FETCH_ALLOW lists it",
            )
    return addresses


# --- One hop ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Redirect:
    location: str


@dataclass(frozen=True)
class _Body:
    content_type: str
    text: str
    bytes_read: int


def _hop_get(
    client: httpx.Client,
    target: _Target,
    addresses: Sequence[IPAddress],
    *,
    deadline: float,
    max_bytes: int,
) -> _Redirect | _Body:
    """GET the target from the first of its checked addresses that accepts a connection."""
    failures: list[str] = []
    for address in addresses:
        try:
            return _address_get(client, target, address, deadline=deadline, max_bytes=max_bytes)
        except httpx.ConnectError as exc:
            # Nothing was sent: the next address of the same host may answer.
            failures.append(f"{address}: {str(exc) or type(exc).__name__}")
    raise FetchError(
        FetchErrorCode.CONNECT_FAILED,
        f"could not connect to {target.host} ({'; '.join(failures)})",
    )


def _address_get(
    client: httpx.Client,
    target: _Target,
    address: IPAddress,
    *,
    deadline: float,
    max_bytes: int,
) -> _Redirect | _Body:
    # Connect to the address we checked, never to a fresh lookup of the name; the name
    # travels in the Host header and, for https, in the TLS server name (SNI), against
    # which the certificate is verified.
    extensions: dict[str, str] = {}
    if target.url.scheme == "https" and not target.literal:
        extensions["sni_hostname"] = target.host
    request_url = target.url.copy_with(host=str(address))
    try:
        with client.stream(
            "GET",
            request_url,
            headers={"Host": target.url.netloc.decode("ascii")},
            timeout=_remaining(deadline, target),
            extensions=extensions,
        ) as response:
            return _response_read(response, target, deadline=deadline, max_bytes=max_bytes)
    except httpx.TimeoutException as exc:
        raise _timeout(target) from exc
    except httpx.ConnectError:
        raise
    except httpx.RequestError as exc:
        # The connection broke mid-answer, a body that fails to decompress, a TLS error
        # after connecting: nothing another address would fix.
        raise FetchError(
            FetchErrorCode.NETWORK_ERROR,
            f"fetching {target} failed: {type(exc).__name__}: {exc}",
        ) from exc


def _response_read(
    response: httpx.Response, target: _Target, *, deadline: float, max_bytes: int
) -> _Redirect | _Body:
    status = response.status_code
    if status in REDIRECT_STATUSES:
        location = response.headers.get("location", "").strip()
        if not location:
            raise FetchError(
                FetchErrorCode.HTTP_ERROR, f"{target} answered HTTP {status} without a Location"
            )
        return _Redirect(location=urljoin(str(target), location))
    if not 200 <= status < 300:
        raise FetchError(
            FetchErrorCode.HTTP_ERROR,
            f"{target} answered HTTP {status} {response.reason_phrase}".rstrip(),
        )
    content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in ACCEPTED_TYPES:
        raise FetchError(
            FetchErrorCode.NOT_HTML,
            f"{target} is {content_type or 'of no declared type'}, not a web page "
            "(HTML or plain text)",
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(target, max_bytes)
    body = bytearray()
    for chunk in response.iter_bytes(CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(target, max_bytes)
        if time.monotonic() > deadline:
            raise _timeout(target)
    return _Body(
        content_type=content_type,
        text=_body_decode(
            bytes(body), response.charset_encoding, html=content_type != "text/plain"
        ),
        bytes_read=len(body),
    )


def _body_decode(body: bytes, charset: str | None, *, html: bool) -> str:
    if not charset and html:
        match = META_CHARSET.search(body[:META_CHARSET_WINDOW])
        charset = match.group(1).decode("ascii") if match else None
    try:
        encoding = codecs.lookup(charset).name if charset else "utf-8"
    except LookupError:
        encoding = "utf-8"  # an unknown charset name: the web's default is the best guess
    return body.decode(encoding, errors="replace")


def _remaining(deadline: float, target: _Target) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _timeout(target)
    return left


def _timeout(target: _Target) -> FetchError:
    limit: float = settings.ROSTER_FETCH_TIMEOUT
    return FetchError(
        FetchErrorCode.TIMEOUT,
        f"fetching {target} took longer than {limit:g} s (ROSTER_FETCH_TIMEOUT)",
    )


def _too_large(target: _Target, max_bytes: int) -> FetchError:
    return FetchError(
        FetchErrorCode.TOO_LARGE,
        f"{target} is larger than {max_bytes} bytes (ROSTER_FETCH_MAX_BYTES)",
    )


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Building a context loads the CA bundle (tens of milliseconds); one serves every fetch.
    return httpx.create_ssl_context()
