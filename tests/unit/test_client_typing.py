"""The typed client is checked by the type checker: mypy --strict passes tests/client_typing/good.py
and reports, in bad.py, exactly the errors its ``# error: CODE`` comments mark (a wrong argument
type, a wrong handler name, a result used as the wrong type, a handler of the wrong kind)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.procs import ROOT

CHECKED = ROOT / "tests" / "client_typing"
_REPORTED = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.*)  \[(?P<code>[a-z-]+)\]$")
_MARKED = re.compile(r"# error: (?P<code>[a-z-]+)$")


def _mypy(name: str) -> tuple[int, str]:
    """mypy --strict (the project's configuration) on one file, from the repository root."""
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--hide-error-context",
                           "--show-error-codes", f"tests/client_typing/{name}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


def test_correct_client_code_type_checks() -> None:
    status, output = _mypy("good.py")
    assert status == 0 and output.strip() == "", output


def test_each_mistake_is_reported_where_it_is_marked() -> None:
    status, output = _mypy("bad.py")
    assert status == 1, output
    reported = {}
    for row in output.splitlines():
        found = _REPORTED.match(row)
        assert found, f"not a mypy error line: {row!r}"
        reported[int(found["line"])] = (found["code"], found["message"])
    marked = {number: found["code"] for number, line in enumerate((CHECKED / "bad.py").read_text().splitlines(), 1)
              if (found := _MARKED.search(line))}
    assert {line: code for line, (code, _) in reported.items()} == marked
    messages = {line: message for line, (_, message) in reported.items()}
    lines = (CHECKED / "bad.py").read_text().splitlines()

    def message_on(fragment: str) -> str:
        return messages[next(n for n, line in enumerate(lines, 1) if fragment in line)]

    assert 'expected "Callable[[ObjectContext, str], Awaitable[int]]"' in message_on('call(add, "five")')
    assert 'Name "ad" is not defined' in message_on("call(ad, 5)")
    assert 'expected "Callable[[ObjectContext, int], Awaitable[str]]"' in message_on("text: str")
    assert '"int" has no attribute "upper"' in message_on('call(add, 5)).upper()')
    assert 'expected "Callable[[Context, int], Awaitable[int]]"' in message_on("service(steps).call(add, 5)")
