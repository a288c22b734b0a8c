"""What the harness raises: the sidecar's answers that are errors, and harness failures."""

from __future__ import annotations


class SidecarError(Exception):
    """The sidecar answered with an error: ``code`` is its HTTP status (a handler's terminal
    error code when the invocation failed), ``message`` its explanation, ``invocation_id`` the
    invocation it concerns, when there is one."""

    def __init__(self, code: int, message: str, invocation_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.invocation_id = invocation_id


class HarnessError(Exception):
    """The harness could not do what it was asked: a process did not start, a service cannot
    be imported by a child process, the sidecar is not installed. The message says what to do."""
