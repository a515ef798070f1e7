"""Safe page fetching over real sockets: the sandbox process serves the pages."""

from __future__ import annotations

import ipaddress
import re
import runpy
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.exceptions import ImproperlyConfigured

from agents.fetch import (
    AllowList,
    FetchError,
    FetchErrorCode,
    address_block_reason,
    page_fetch,
)
from agents.helper import helper_extract_page

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def loopback_allowed(settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROSTER_FETCH_ALLOW = ["127.0.0.1"]


def fetch_error(url: str) -> FetchError:
    with pytest.raises(FetchError) as caught:
        page_fetch(url=url)
    return caught.value


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]/", "loopback"),
        ("http://localhost/", "loopback"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("http://2130706433/", "loopback"),  # 127.0.0.1 written as one number
        ("http://0.0.0.0/", "unspecified"),
        ("http://100.64.0.1/", "non-public"),
    ],
)
def test_non_public_addresses_are_refused(url: str, kind: str) -> None:
    error = fetch_error(url)

    assert error.code == FetchErrorCode.BLOCKED_ADDRESS
    assert error.code == "blocked_address"
    assert kind in error.message
    assert "ROSTER_FETCH_ALLOW" in error.message


def test_a_host_name_is_refused_by_what_it_resolves_to(sandbox) -> None:  # type: ignore[no-untyped-def]
    error = fetch_error(f"http://localhost:{sandbox.port}/_sandbox/pages/article")

    assert error.code == "blocked_address"
    assert "localhost resolves to" in error.message


def test_an_allowed_address_is_fetched_over_a_real_socket(sandbox, loopback_allowed) -> None:  # type: ignore[no-untyped-def]
    url = f"{sandbox.url}/_sandbox/pages/article"

    page = page_fetch(url=url)

    assert page.url == url
    assert page.final_url == url
    assert page.content_type == "text/html"
    assert page.is_html
    assert page.bytes_read == len(page.text.encode())
    assert "<article>" in page.text
    text = helper_extract_page(html=page.text, url=page.final_url).value
    assert "Hermit crabs trade shells as they grow." in text
    assert "Sign in" not in text
    assert "All rights reserved" not in text


def test_an_allowed_host_name_is_fetched(sandbox, settings) -> None:  # type: ignore[no-untyped-def]
    # Allowed by name, whatever it resolves to; if it resolves to ::1 first (where the
    # sandbox does not listen), the next checked address is tried.
    settings.ROSTER_FETCH_ALLOW = ["localhost"]

    page = page_fetch(url=f"http://localhost:{sandbox.port}/_sandbox/pages/plain")

    assert page.content_type == "text/plain"
    assert not page.is_html
    assert page.text.startswith("Tide pools of the northern coast")


def test_the_connection_goes_to_the_checked_address(sandbox, settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A rebinding DNS server answers a harmless address for the check and a private one
    # for the connection. Only the first answer may ever be used.
    settings.ROSTER_FETCH_ALLOW = ["127.0.0.1"]
    real_getaddrinfo = socket.getaddrinfo
    asked: list[str] = []

    def rebinding(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "rebind.example":
            asked.append(host)
            host = "127.0.0.1" if len(asked) == 1 else "10.0.0.1"
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)

    page = page_fetch(url=f"http://rebind.example:{sandbox.port}/_sandbox/pages/plain")

    assert page.text.startswith("Tide pools")
    assert asked == ["rebind.example"]


def test_a_page_streamed_past_the_limit_is_too_large(sandbox, loopback_allowed, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROSTER_FETCH_MAX_BYTES = 64 * 1024

    error = fetch_error(f"{sandbox.url}/_sandbox/pages/big?kib=1024")

    assert error.code == "too_large"
    assert "65536 bytes" in error.message


def test_a_page_declared_larger_than_the_limit_is_too_large(
    sandbox, loopback_allowed, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.ROSTER_FETCH_MAX_BYTES = 500

    assert fetch_error(f"{sandbox.url}/_sandbox/pages/article").code == "too_large"


def test_a_binary_body_is_not_html(sandbox, loopback_allowed) -> None:  # type: ignore[no-untyped-def]
    error = fetch_error(f"{sandbox.url}/_sandbox/pages/binary")

    assert error.code == "not_html"
    assert "application/octet-stream" in error.message


def test_redirects_are_followed_and_each_hop_is_checked(sandbox, loopback_allowed) -> None:  # type: ignore[no-untyped-def]
    url = f"{sandbox.url}/_sandbox/pages/redirect?to=/_sandbox/pages/plain&hops=5"

    page = page_fetch(url=url)

    assert page.url == url
    assert page.final_url == f"{sandbox.url}/_sandbox/pages/plain"


def test_a_redirect_to_a_blocked_address_is_refused(sandbox, loopback_allowed) -> None:  # type: ignore[no-untyped-def]
    error = fetch_error(
        f"{sandbox.url}/_sandbox/pages/redirect?to=http://169.254.169.254/latest/meta-data/"
    )

    assert error.code == "blocked_address"
    assert "169.254.169.254" in error.message


def test_more_than_five_redirects_are_refused(sandbox, loopback_allowed) -> None:  # type: ignore[no-untyped-def]
    error = fetch_error(f"{sandbox.url}/_sandbox/pages/redirect?to=/_sandbox/pages/plain&hops=6")

    assert error.code == "too_many_redirects"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/file.txt",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "example.com/no-scheme",
        "http://user:secret@example.com/",
        "http://",
    ],
)
def test_urls_that_are_not_plain_http_are_bad(url: str) -> None:
    assert fetch_error(url).code == "bad_url"


def test_a_slow_page_times_out(sandbox, loopback_allowed, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROSTER_FETCH_TIMEOUT = 0.5

    error = fetch_error(f"{sandbox.url}/_sandbox/pages/article?latency=3")

    assert error.code == "timeout"
    assert "0.5 s" in error.message


def test_an_error_status_is_an_http_error(sandbox, loopback_allowed) -> None:  # type: ignore[no-untyped-def]
    error = fetch_error(f"{sandbox.url}/_sandbox/pages/missing")

    assert error.code == "http_error"
    assert "HTTP 404" in error.message


def test_a_closed_port_is_a_connect_failure(loopback_allowed) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    assert fetch_error(f"http://127.0.0.1:{port}/").code == "connect_failed"


def test_an_unresolvable_host_is_a_dns_failure() -> None:
    assert fetch_error("http://no-such-host.invalid/").code == "dns_failed"


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("192.168.1.10", True),
        ("fd00::1", True),
        ("fe80::1", True),
        ("ff02::1", True),
        ("224.0.0.1", True),
        ("192.0.2.1", True),  # documentation range
        ("::ffff:10.0.0.1", True),  # IPv4-mapped
        ("64:ff9b::a00:1", True),  # NAT64 of 10.0.0.1
        ("64:ff9b::808:808", False),  # NAT64 of 8.8.8.8
        ("2002:a00:1::", True),  # 6to4 of 10.0.0.1
    ],
)
def test_address_block_reason(address: str, blocked: bool) -> None:
    assert bool(address_block_reason(ipaddress.ip_address(address))) is blocked


def test_allow_list_matches_networks_hosts_and_domains() -> None:
    allowed = AllowList.from_entries(["10.0.0.0/8", "intranet.local", ".corp.example", "::1"])

    assert allowed.allows_address(ipaddress.ip_address("10.20.30.40"))
    assert allowed.allows_address(ipaddress.ip_address("::1"))
    assert not allowed.allows_address(ipaddress.ip_address("192.168.0.1"))
    assert allowed.allows_host("intranet.local")
    assert allowed.allows_host("INTRANET.local.")
    assert allowed.allows_host("corp.example")
    assert allowed.allows_host("wiki.corp.example")
    assert not allowed.allows_host("notcorp.example")
    assert not allowed.allows_host("other.local")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROSTER_FETCH_ALLOW": "10.0.0.0/33"}, "is neither a CIDR"),
        ({"ROSTER_FETCH_ALLOW": "http://intranet/"}, "is neither a CIDR"),
        ({"ROSTER_FETCH_TIMEOUT": "-1"}, "ROSTER_FETCH_TIMEOUT must be"),
        ({"ROSTER_FETCH_MAX_BYTES": "2MB"}, "ROSTER_FETCH_MAX_BYTES must be a whole number"),
        ({"ROSTER_FETCH_MAX_BYTES": "0"}, "ROSTER_FETCH_MAX_BYTES must be a whole number > 0"),
    ],
)
def test_bad_fetch_settings_fail_loudly(monkeypatch, env: dict[str, str], message: str) -> None:  # type: ignore[no-untyped-def]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        runpy.run_path(str(ROOT / "office" / "settings.py"))


def test_fetch_settings_are_read(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ROSTER_FETCH_ALLOW", "10.0.0.0/8, Intranet.Example.com,.corp.example")

    namespace = runpy.run_path(str(ROOT / "office" / "settings.py"))

    assert namespace["ROSTER_FETCH_ALLOW"] == [
        "10.0.0.0/8",
        "intranet.example.com",
        ".corp.example",
    ]
    assert namespace["ROSTER_FETCH_MAX_BYTES"] == 2 * 1024 * 1024
    assert namespace["ROSTER_FETCH_TIMEOUT"] == 10.0


# --- https: the checked address, the name in SNI and the certificate ----------------------


def tls_server_context(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, bytes]:
    """Return a server context with a self-signed certificate for `name`, and its PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context, cert_pem


@pytest.fixture
def https_pages(tmp_path: Path, settings, monkeypatch):  # type: ignore[no-untyped-def]
    """An https server on loopback whose certificate names pages.example, trusted by the
    fetcher, with pages.example (and other.example) resolving to it. Yields its port and
    the server names it saw (SNI)."""
    server_context, cert_pem = tls_server_context(tmp_path, "pages.example")
    seen_names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: seen_names.append(name)  # type: ignore[assignment, misc, return-value]

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"<html><body><p>Host header: {self.headers['Host']}</p></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Page)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    client_context = ssl.create_default_context(cadata=cert_pem.decode())
    monkeypatch.setattr("agents.fetch._ssl_context", lambda: client_context)
    real_getaddrinfo = socket.getaddrinfo

    def resolve(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host in ("pages.example", "other.example"):
            host = "127.0.0.1"
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    settings.ROSTER_FETCH_ALLOW = ["127.0.0.1"]
    try:
        yield server.server_address[1], seen_names
    finally:
        server.shutdown()
        server.server_close()


def test_https_connects_to_the_address_and_verifies_the_name(https_pages) -> None:  # type: ignore[no-untyped-def]
    port, seen_names = https_pages

    page = page_fetch(url=f"https://pages.example:{port}/")

    assert f"Host header: pages.example:{port}" in page.text
    assert seen_names == ["pages.example"]


def test_https_refuses_a_certificate_for_another_name(https_pages) -> None:  # type: ignore[no-untyped-def]
    port, _ = https_pages

    error = fetch_error(f"https://other.example:{port}/")

    assert error.code in ("connect_failed", "network_error")
    assert "certificate" in error.message.lower() or "hostname" in error.message.lower()
