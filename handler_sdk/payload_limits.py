"""``max_payload_bytes``: step and state values past it are refused, as terminal failures (413).

The sidecar sends its limit with each ``Start``. A larger step value fails the step (journaled as
that failure, so a replay fails it the same way); a larger state value fails the ``ctx.set``
before anything is journaled. Either way the handler can catch the ``TerminalError`` and keep
the value elsewhere (object storage), journaling only a reference to it.
"""

from __future__ import annotations

import msgspec

from .errors import TerminalError
from .protocol import Failure, Run

TOO_LARGE = 413


def too_large(what: str, size: int, limit: int) -> str:
    """Why a value of ``size`` bytes is refused."""
    return (f"{what} is {size} bytes, over the sidecar's max_payload_bytes ({limit}): keep it elsewhere "
            "(object storage) and pass a reference to it")


def checked_step(entry: Run, limit: int) -> Run:
    """``entry``, or its failure with 413 where its value is over ``limit`` (0: none known)."""
    if not limit or entry.value is None or len(entry.value) <= limit:
        return entry
    failure = Failure(code=TOO_LARGE, message=too_large(f"the value of step {entry.name!r}", len(entry.value), limit))
    return msgspec.structs.replace(entry, value=None, failure=failure)


def check_state_value(name: str, raw: bytes, limit: int) -> None:
    """Raise ``TerminalError(413)`` if state value ``name`` (encoded as ``raw``) is over ``limit``."""
    if limit and len(raw) > limit:
        raise TerminalError(too_large(f"state value {name!r}", len(raw), limit), TOO_LARGE)
