"""The replay state machine: match each command the code issues against the journal.

Pure on purpose: it takes journal entries and returns decisions (no socket, no event loop, no
clock), so that it can be tested exhaustively and reused by any transport. The rule, per
DESIGN §5: the command at index ``i`` must have the kind and name of ``journal[i]``; then its
recorded result is used and nothing runs. Past the end of the journal, the command executes and
becomes entry ``i``. Anything else is a ``NondeterminismError``; replay never guesses.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import NondeterminismError
from .protocol import Entry, Output, entry_name


def describe(kind: type, name: str) -> str:
    """How an entry reads in an error message: its kind, and its name when it has one."""
    return f"{kind.__name__} {name!r}" if name else kind.__name__


def describe_entry(entry: Entry) -> str:
    return describe(type(entry), entry_name(entry))


class Replay:
    """Walks one attempt through its journal, one command at a time.

    ``journal[0]`` is the invocation's ``Input``; the first command the code issues is entry 1.
    """

    __slots__ = ("invocation_id", "_journal", "_next")

    def __init__(self, invocation_id: str, journal: Sequence[Entry]) -> None:
        self.invocation_id = invocation_id
        self._journal = journal
        self._next = 1

    @property
    def next_index(self) -> int:
        """The index the next command will get."""
        return self._next

    @property
    def replaying(self) -> bool:
        """Whether the next command will be answered from the journal."""
        return self._next < len(self._journal)

    @property
    def journal(self) -> Sequence[Entry]:
        """The recorded entries this attempt started with, ``Input`` first."""
        return self._journal

    def peek(self) -> Entry | None:
        """The recorded entry the next command will be matched against; ``None`` past the end."""
        return self._journal[self._next] if self._next < len(self._journal) else None

    def step(self, kind: type, name: str) -> tuple[int, Entry | None]:
        """Claim the next index for a command of ``kind`` named ``name``.

        Returns the index and the recorded entry (use its result, execute nothing), or ``None``
        past the end of the journal (execute, and journal the outcome at that index).
        """
        index = self._next
        if index >= len(self._journal):
            self._next = index + 1
            return index, None
        recorded = self._journal[index]
        if type(recorded) is not kind or entry_name(recorded) != name:
            raise NondeterminismError(
                self.invocation_id, index, describe(kind, name), describe_entry(recorded)
            )
        self._next = index + 1
        return index, recorded

    def finish(self) -> None:
        """Check that the code, now ending, consumed every recorded step.

        A journal longer than what the code issued means an earlier attempt took steps this
        code no longer takes: ending now would silently drop them. A trailing ``Output`` is the
        sidecar's own record of the end and is not a step.
        """
        end = len(self._journal)
        if end > self._next and type(self._journal[end - 1]) is Output:
            end -= 1
        if self._next < end:
            raise NondeterminismError(
                self.invocation_id, self._next, "the handler's end",
                describe_entry(self._journal[self._next]),
            )
