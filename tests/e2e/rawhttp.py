"""HTTP/1.1 over a plain socket, for requests an HTTP client would refuse to send (bytes that are
not UTF-8 in a header, malformed request lines) and for reading exactly what came back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def request_bytes(method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]] = (), body: bytes = b"") -> bytes:
    """A request with ``Host``, ``Connection: close`` and a ``Content-Length`` when there is a body."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: sidecar", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def exchange(address: str, data: bytes, *, timeout: float = 5.0) -> RawResponse | None:
    """Send ``data`` and read the response (``None`` if the server closed without one).
    Raises TimeoutError when nothing complete came back within ``timeout``."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(_read_response(reader, head_only=data.startswith(b"HEAD ")), timeout)
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader, *, head_only: bool) -> RawResponse | None:
    while True:  # past any interim answer (100 Continue)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        response = RawResponse(int(status_line.split(" ")[1]))
        if response.status >= 200:
            break
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            response.headers[name.strip().lower()] = value.strip()
    if head_only:
        return response
    if "content-length" in response.headers:
        response.body = await reader.readexactly(int(response.headers["content-length"]))
    elif response.headers.get("transfer-encoding", "").lower() == "chunked":
        response.body = await _read_chunks(reader)
    else:
        response.body = await reader.read()
    return response


async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)
