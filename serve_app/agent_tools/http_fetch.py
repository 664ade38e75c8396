"""`http_fetch`: GET a URL on an allowlisted host, refusing private addresses after DNS (SSRF).

How the address check cannot be bypassed by DNS rebinding: the tool resolves the host itself,
checks every address it gets, and then connects to one of those checked IPs (the URL's host is
replaced by the IP), sending the original name in the `Host` header and, for https, as the TLS
SNI / certificate name (httpcore's `sni_hostname` request extension). No second lookup happens
between the check and the connection, so a name that answers a public IP to the check and a
private one a moment later never gets that second chance. Proxies from the environment are
ignored (`trust_env=False`) for the same reason. Redirects are not followed by httpx: each hop's
URL goes through the same scheme, allowlist, resolution and address checks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.errors import ToolError

__all__ = ["HttpFetch", "HttpFetchSettings", "is_blocked_address", "resolve_host"]

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REDIRECTS = {301, 302, 303, 307, 308}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class HttpFetchSettings(BaseModel):
    """Configuration of `http_fetch` (the tool's `init_kwargs`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Exact host names ("docs.python.org"), subdomain wildcards ("*.example.com", which does not
    # match example.com itself), or "*" for any host; the default allows nothing.
    allowed_hosts: list[str] = []
    # Networks exempt from the private-address refusal, e.g. ["10.1.2.0/24"] for an intranet
    # docs server. Empty by default; it is the only way to reach a private address, so a test
    # reaching its own 127.0.0.1 server has to name 127.0.0.1/32 here explicitly.
    allowed_private_networks: list[str] = []
    # Bodies past this are cut (the answer says `truncated`). 100 kB keeps a page inside the
    # guardrail's default scan budget (injection.max_scan_chars = 100,000): a longer output would
    # be refused unscanned at the ingress rather than reach a model or the caller.
    max_response_bytes: int = Field(100_000, ge=1)
    timeout_s: float = Field(10.0, gt=0)
    max_redirects: int = Field(5, ge=0, le=20)
    user_agent: str = "aegis-http-fetch/1"

    @field_validator("allowed_hosts")
    @classmethod
    def _normalise_hosts(cls, hosts: list[str]) -> list[str]:
        return [_normalise_host(h) for h in hosts]

    @field_validator("allowed_private_networks")
    @classmethod
    def _valid_networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad entry
        return networks


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to for a TCP connection, in resolver order, deduplicated."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_blocked_address(ip: IPAddress) -> bool:
    """True for anything but a globally routable unicast address.

    IPv6 forms that embed an IPv4 address (mapped, 6to4, Teredo, NAT64) are judged by the
    embedded address too, so ::ffff:127.0.0.1 is as blocked as 127.0.0.1.
    """
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            candidates.append(ip.ipv4_mapped)
        if ip.sixtofour:
            candidates.append(ip.sixtofour)
        if ip.teredo:
            candidates.extend(ip.teredo)
        if ip in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return any(
        c.is_private or c.is_loopback or c.is_link_local or c.is_multicast or c.is_reserved
        or c.is_unspecified or not c.is_global
        for c in candidates
    )


class HttpFetch:
    """Fetch a web page with GET from an allowlisted host; the text, truncated at the size cap."""

    def __init__(self, settings: HttpFetchSettings | dict[str, Any] | None = None, *,
                 resolver: Resolver | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """Args:
            settings: allowlist and limits.
            resolver: `async (host, port) -> [ip, ...]`; the system resolver by default. Tests
                pass their own to make a name resolve to an address of their choosing.
            ssl_context: certificate verification (default: the system trust store).
        """
        self.settings = (settings if isinstance(settings, HttpFetchSettings)
                         else HttpFetchSettings.model_validate(settings or {}))
        self._resolve = resolver or resolve_host
        self._verify: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._exempt = [ipaddress.ip_network(n, strict=False)
                        for n in self.settings.allowed_private_networks]

    async def __call__(self, url: Annotated[str, Field(min_length=1, max_length=2048)]) -> dict[str, Any]:
        """GET the URL and return its status, content type and text.

        Args:
            url: an http or https URL on an allowed host.
        """
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                return await self._fetch(url)
        except TimeoutError:
            raise ToolError(f"fetching {url} took longer than {self.settings.timeout_s:g} s",
                            param="url", code="timeout") from None

    async def _fetch(self, url: str) -> dict[str, Any]:
        current = self._parse(url)
        hops: list[str] = []
        for _ in range(self.settings.max_redirects + 1):
            addresses = await self._checked_addresses(current)
            status, headers, body, truncated = await self._get(current, addresses)
            location = headers.get("location")
            if status in _REDIRECTS and location:
                hops.append(str(current))
                current = self._parse(str(current.join(location)))
                continue
            content_type = headers.get("content-type", "")
            return {"url": str(current), "status": status, "content_type": content_type,
                    "text": body.decode(_charset(content_type), errors="replace"),
                    "bytes": len(body), "truncated": truncated, "redirects": hops}
        raise ToolError(f"more than {self.settings.max_redirects} redirects from {url}",
                        param="url", code="too_many_redirects")

    def _parse(self, url: str) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ToolError(f"invalid URL: {exc}", param="url", code="invalid_url") from None
        if parsed.scheme not in ("http", "https"):
            raise ToolError(f"only http and https URLs are fetched, got '{parsed.scheme}:'",
                            param="url", code="invalid_url")
        if not parsed.raw_host:
            raise ToolError("the URL has no host", param="url", code="invalid_url")
        if parsed.userinfo:
            raise ToolError("URLs with credentials are not fetched", param="url",
                            code="invalid_url")
        host = _normalise_host(parsed.raw_host.decode("ascii"))
        if not self._host_allowed(host):
            raise ToolError(f"host '{host}' is not in the allowlist", param="url",
                            code="host_not_allowed")
        return parsed

    def _host_allowed(self, host: str) -> bool:
        for allowed in self.settings.allowed_hosts:
            if allowed == "*" or allowed == host:
                return True
            if allowed.startswith("*.") and host.endswith(allowed[1:]):
                return True
        return False

    async def _checked_addresses(self, url: httpx.URL) -> list[str]:
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await self._resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise ToolError(f"cannot resolve '{host}': {exc}", param="url",
                            code="dns_error") from None
        if not addresses:
            raise ToolError(f"'{host}' resolves to no address", param="url", code="dns_error")
        # Every address must pass, not just the first: a name answering one public and one
        # private address would otherwise reach the private one when the first fails.
        for address in addresses:
            ip = ipaddress.ip_address(address)
            if is_blocked_address(ip) and not any(ip in net for net in self._exempt):
                raise ToolError(f"'{host}' resolves to {ip}, a non-public address", param="url",
                                code="blocked_address")
        return addresses

    async def _get(self, url: httpx.URL, addresses: list[str]) -> tuple[int, httpx.Headers, bytes, bool]:
        host = url.raw_host.decode("ascii")
        headers = {"Host": url.netloc.decode("ascii"), "User-Agent": self.settings.user_agent,
                   "Accept-Encoding": "identity"}
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        last_error: Exception | None = None
        # A fresh client per hop: connections are pooled by IP, and one made with another
        # name's SNI must never carry this request.
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                     verify=self._verify,
                                     timeout=self.settings.timeout_s) as client:
            for address in addresses:
                request = client.build_request("GET", url.copy_with(host=address),
                                               headers=headers, extensions=extensions)
                try:
                    response = await client.send(request, stream=True)
                except httpx.ConnectError as exc:
                    last_error = exc
                    continue
                except httpx.HTTPError as exc:
                    raise ToolError(f"fetching {url} failed: {type(exc).__name__}", param="url",
                                    code="fetch_failed") from None
                try:
                    return (response.status_code, response.headers,
                            *await self._read_capped(response))
                except httpx.HTTPError as exc:
                    raise ToolError(f"reading {url} failed: {type(exc).__name__}", param="url",
                                    code="fetch_failed") from None
                finally:
                    await response.aclose()
        raise ToolError(f"cannot connect to {host}: {type(last_error).__name__}", param="url",
                        code="fetch_failed")

    async def _read_capped(self, response: httpx.Response) -> tuple[bytes, bool]:
        encoding = response.headers.get("content-encoding", "identity").lower()
        if encoding not in ("identity", ""):
            # Asked for identity; decompressing would let a small body expand past the cap.
            raise ToolError(f"the server sent a '{encoding}'-encoded body", param="url",
                            code="fetch_failed")
        cap = self.settings.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                break  # stop reading: the rest of the body is never downloaded
        body = b"".join(chunks)
        return body[:cap], size > cap


def _normalise_host(host: str) -> str:
    return host.strip().lower().rstrip(".").strip("[]")


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            try:
                "".encode(value.strip('"'))
                return value.strip('"')
            except LookupError:
                break
    return "utf-8"
