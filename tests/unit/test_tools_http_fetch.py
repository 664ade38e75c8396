"""http_fetch against a real local http.server: SSRF refusals, pinned connections, caps, timeout."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from serve_app.agent_tools.http_fetch import HttpFetch, is_blocked_address
from common.errors import ToolError

LOCAL = ["127.0.0.1/32"]  # the explicit exemption that lets a test reach its own server


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status, body=b"", headers=()):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's name
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/ok":
            self._send(200, "héllo".encode(), [("Content-Type", "text/plain; charset=utf-8")])
        elif url.path == "/host":
            self._send(200, self.headers["Host"].encode(), [("Content-Type", "text/plain")])
        elif url.path == "/big":
            self._send(200, b"x" * 200_000, [("Content-Type", "text/plain")])
        elif url.path == "/redirect":
            self._send(302, headers=[("Location", query["to"][0])])
        elif url.path == "/loop":
            self._send(302, headers=[("Location", "/loop")])
        elif url.path == "/gzip":
            self._send(200, b"\x1f\x8b", [("Content-Encoding", "gzip")])
        elif url.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):  # one byte every 0.2 s: each read is quick, the whole is not
                    self.wfile.write(b"s")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
        else:
            self._send(404)


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture(scope="module")
def server():
    """A plain HTTP server on 127.0.0.1; its port."""
    srv = _serve(ThreadingHTTPServer(("127.0.0.1", 0), _Handler))
    srv.daemon_threads = True
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _resolver(table, calls=None):
    async def resolve(host, port):
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise OSError(f"unknown host {host}")
        answer = table[host]
        return answer(len(calls or [])) if callable(answer) else answer
    return resolve


def _fetch(**settings):
    resolver = settings.pop("resolver", None)
    context = settings.pop("ssl_context", None)
    return HttpFetch(settings, resolver=resolver, ssl_context=context)


async def test_fetches_from_an_allowed_local_server(server):
    fetch = _fetch(allowed_hosts=["127.0.0.1"], allowed_private_networks=LOCAL)
    result = await fetch(f"http://127.0.0.1:{server}/ok")
    assert result["status"] == 200
    assert result["text"] == "héllo"
    assert result["truncated"] is False
    assert result["content_type"].startswith("text/plain")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/ok",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{port}/ok",
    "http://[::ffff:127.0.0.1]:{port}/ok",
    "http://0.0.0.0:{port}/ok",
    "http://2130706433:{port}/ok",  # 127.0.0.1 as one decimal number
    "http://localhost:{port}/ok",   # a name that resolves to loopback
])
async def test_private_targets_are_refused_by_default(server, url):
    fetch = _fetch(allowed_hosts=["*"])  # no exemption: only the address check stands
    with pytest.raises(ToolError) as err:
        await fetch(url.format(port=server))
    assert err.value.code == "blocked_address"


async def test_a_name_resolving_to_a_private_address_is_refused():
    fetch = _fetch(allowed_hosts=["*"], resolver=_resolver({"intranet.test": ["10.0.0.5"]}))
    with pytest.raises(ToolError, match="resolves to 10.0.0.5") as err:
        await fetch("http://intranet.test/")
    assert err.value.code == "blocked_address"


async def test_one_private_address_among_public_ones_is_enough_to_refuse():
    fetch = _fetch(allowed_hosts=["*"],
                   resolver=_resolver({"mixed.test": ["93.184.216.34", "192.168.0.10"]}))
    with pytest.raises(ToolError) as err:
        await fetch("http://mixed.test/")
    assert err.value.code == "blocked_address"


async def test_connects_to_the_checked_address_with_the_original_host_header(server):
    # A rebinding resolver: the checked answer first, a private one on any later lookup. One
    # lookup per hop and the request reaching our server prove the connection used the IP that
    # was checked, while the server still saw the name in Host.
    calls: list[str] = []
    rebinding = _resolver({"docs.example.com":
                           lambda n: ["127.0.0.1"] if n == 1 else ["10.9.9.9"]}, calls)
    fetch = _fetch(allowed_hosts=["*.example.com"], allowed_private_networks=LOCAL,
                   resolver=rebinding)
    result = await fetch(f"http://docs.example.com:{server}/host")
    assert result["text"] == f"docs.example.com:{server}"
    assert calls == ["docs.example.com"]


@pytest.mark.parametrize("target, code", [
    ("http://169.254.169.254/latest/meta-data/", "blocked_address"),
    ("http://rebind.test:{port}/ok", "blocked_address"),
    ("http://127.0.0.2:{port}/ok", "blocked_address"),  # loopback, but outside the exemption
    ("file:///etc/passwd", "invalid_url"),
])
async def test_each_redirect_hop_is_checked_again(server, target, code):
    fetch = _fetch(allowed_hosts=["*"], allowed_private_networks=LOCAL,
                   resolver=_resolver({"127.0.0.1": ["127.0.0.1"], "127.0.0.2": ["127.0.0.2"],
                                       "169.254.169.254": ["169.254.169.254"],
                                       "rebind.test": ["10.0.0.7"]}))
    with pytest.raises(ToolError) as err:
        await fetch(f"http://127.0.0.1:{server}/redirect?to={target.format(port=server)}")
    assert err.value.code == code


async def test_allowed_redirects_are_followed_and_counted(server):
    fetch = _fetch(allowed_hosts=["127.0.0.1"], allowed_private_networks=LOCAL, max_redirects=2)
    result = await fetch(f"http://127.0.0.1:{server}/redirect?to=/ok")
    assert result["url"] == f"http://127.0.0.1:{server}/ok"
    assert result["text"] == "héllo"
    assert len(result["redirects"]) == 1
    with pytest.raises(ToolError) as err:
        await fetch(f"http://127.0.0.1:{server}/loop")
    assert err.value.code == "too_many_redirects"


@pytest.mark.parametrize("url, allowed, code", [
    ("http://example.com/", ["*.example.com"], "host_not_allowed"),  # wildcard excludes the apex
    ("http://evil.test/", ["example.com"], "host_not_allowed"),
    ("http://127.0.0.1/", [], "host_not_allowed"),                    # default: nothing allowed
    ("ftp://example.com/", ["*"], "invalid_url"),
    ("http://user:pw@example.com/", ["*"], "invalid_url"),
])
async def test_allowlist_and_scheme(url, allowed, code):
    with pytest.raises(ToolError) as err:
        await _fetch(allowed_hosts=allowed)(url)
    assert err.value.code == code


async def test_size_cap_truncates_and_stops_reading(server):
    fetch = _fetch(allowed_hosts=["127.0.0.1"], allowed_private_networks=LOCAL,
                   max_response_bytes=1000)
    result = await fetch(f"http://127.0.0.1:{server}/big")
    assert result["bytes"] == 1000 and len(result["text"]) == 1000
    assert result["truncated"] is True
    exact = _fetch(allowed_hosts=["127.0.0.1"], allowed_private_networks=LOCAL,
                   max_response_bytes=len("héllo".encode()))
    assert (await exact(f"http://127.0.0.1:{server}/ok"))["truncated"] is False


async def test_compressed_bodies_are_refused(server):
    fetch = _fetch(allowed_hosts=["127.0.0.1"], allowed_private_networks=LOCAL)
    with pytest.raises(ToolError, match="gzip"):
        await fetch(f"http://127.0.0.1:{server}/gzip")


async def test_a_slow_body_hits_the_overall_timeout(server):
    fetch = _fetch(allowed_hosts=["127.0.0.1"], allowed_private_networks=LOCAL, timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(ToolError) as err:
        await fetch(f"http://127.0.0.1:{server}/slow")
    assert err.value.code == "timeout"
    # The body would take 20 s; the deadline covers the whole fetch, not each read.
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("address, blocked", [
    ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True),
    ("169.254.169.254", True), ("100.64.0.1", True), ("0.0.0.0", True), ("224.0.0.1", True),
    ("255.255.255.255", True), ("240.0.0.1", True), ("::1", True), ("::", True),
    ("fe80::1", True), ("fc00::1", True), ("ff02::1", True), ("::ffff:127.0.0.1", True),
    ("64:ff9b::a00:1", True), ("2002:7f00:1::", True),
    ("8.8.8.8", False), ("93.184.216.34", False), ("2606:4700:4700::1111", False),
])
def test_address_classification(address, blocked):
    assert is_blocked_address(ipaddress.ip_address(address)) is blocked


def _self_signed(tmp_path, name):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_https_pins_the_ip_but_verifies_the_certificate_for_the_name(tmp_path):
    cert, key = _self_signed(tmp_path, "secure.test")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.socket = server_ctx.wrap_socket(srv.socket, server_side=True)
    srv.daemon_threads = True
    _serve(srv)
    port = srv.server_address[1]
    client_ctx = ssl.create_default_context(cafile=str(cert))
    resolver = _resolver({"secure.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    try:
        fetch = _fetch(allowed_hosts=["*"], allowed_private_networks=LOCAL, resolver=resolver,
                       ssl_context=client_ctx)
        result = await fetch(f"https://secure.test:{port}/host")
        assert result["text"] == f"secure.test:{port}"
        # Same IP, another name: the certificate does not match it, so TLS fails.
        with pytest.raises(ToolError) as err:
            await fetch(f"https://other.test:{port}/host")
        assert err.value.code == "fetch_failed"
    finally:
        srv.shutdown()
        srv.server_close()
