"""Server-Sent Events, parsed as the WHATWG HTML standard says (section 9.2, "Parsing an event
stream"), from chunks of bytes however the network cut them.

aiohttp reads lines of at most 128 KiB; an event's data line may be longer, so this parser takes
raw chunks and finds the line ends itself.
"""

from __future__ import annotations

from typing import NamedTuple


class Message(NamedTuple):
    """One dispatched event: its type (``message`` unless named), its data, and the stream's last
    event ID at that point (an event without an ``id`` field keeps the one before, per the
    standard)."""

    event: str
    data: str
    last_id: str | None


class SSEParser:
    """Feed it chunks; it returns the events they complete. Keeps what a chunk left unfinished."""

    def __init__(self, last_id: str | None = None) -> None:
        self.last_id = last_id
        self._pending: list[bytes] = []
        self._event = ""
        self._data: list[str] = []
        self._after_cr = False

    def feed(self, chunk: bytes) -> list[Message]:
        if self._after_cr and chunk:
            # The line before ended at a CR that closed the last chunk: a LF now is its CRLF's half.
            self._after_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if b"\n" not in chunk and b"\r" not in chunk:
            self._pending.append(chunk)  # no line ends here: not worth splitting again
            return []
        lines = b"".join([*self._pending, chunk]).splitlines(keepends=True)  # at CR, LF or CRLF
        if not lines[-1].endswith((b"\n", b"\r")):
            self._pending = [lines.pop()]  # unfinished: it waits for the rest
        else:
            self._pending = []
            self._after_cr = lines[-1].endswith(b"\r")
        messages = []
        for raw in lines:
            message = self._line(raw.rstrip(b"\r\n").decode("utf-8", errors="replace"))
            if message is not None:
                messages.append(message)
        return messages

    def _line(self, line: str) -> Message | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the sidecar's keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None  # "retry" and unknown fields are ignored, as the standard says

    def _dispatch(self) -> Message | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return Message(event, "\n".join(data), self.last_id)
