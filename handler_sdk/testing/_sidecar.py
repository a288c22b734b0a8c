"""``TestSidecar``: a real sidecar and the services under test, as child processes, for one test.

The sidecar runs from its own distribution (``python -m sidecar``), never imported here: the SDK
does not depend on it, a test environment installs it. It serves on loopback ports of its own,
on a temporary data directory, with ``--durability none`` (a process crash loses nothing either
way) and its test clock, which :meth:`TestSidecar.advance` moves. The services run in a second
child, ``python -m handler_sdk MODULE:NAME ...``, so :meth:`TestSidecar.kill_handler` is a real
SIGKILL and the next attempt replays in a fresh process.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload
from urllib.parse import quote, unquote

import aiohttp
import msgspec

from .._definition import Definition
from ._errors import HarnessError, SidecarError
from ._ports import free_port
from ._processes import ChildProcess
from ._services import import_paths
from ._views import FINISHED, STATUSES, Invocation, Status, decode_invocation

T = TypeVar("T")

#: The distribution that holds the sidecar, as a missing one is named.
SIDECAR_DISTRIBUTION = "durable-sidecar"
#: How long a polite stop may take before it is a SIGKILL.
_STOP_TIMEOUT_S = 10.0
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class _NoArgument:
    def __repr__(self) -> str:
        return "<no argument>"


#: ``call``/``send`` without an argument send an empty body (a handler that takes no input).
NO_ARGUMENT: Any = _NoArgument()


def sidecar_command() -> list[str]:
    """How to run the sidecar with this interpreter; a :class:`HarnessError` saying what to
    install when it is not there."""
    try:
        found = importlib.util.find_spec("sidecar.__main__")
    except ModuleNotFoundError:
        found = None
    if found is None:
        raise HarnessError(f"handler_sdk.testing runs a real sidecar, which is not installed in this environment "
                           f"({sys.executable}): pip install {SIDECAR_DISTRIBUTION}")
    return [sys.executable, "-m", "sidecar"]


def _segments(target: str) -> str:
    """``Service/handler`` or ``Object/key/handler`` as a URL path, each part escaped once."""
    parts = [unquote(part) for part in target.strip("/").split("/")]
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"{target!r}: expected Service/handler or Object/key/handler")
    return "/".join(quote(part, safe="") for part in parts)


def _milliseconds(amount: datetime.timedelta | float, what: str) -> int:
    ms = amount // datetime.timedelta(milliseconds=1) if isinstance(amount, datetime.timedelta) \
        else round(amount * 1000)
    if ms < 0:
        raise ValueError(f"{what} must be zero or more, not {amount!r}")
    return ms


def _decode(body: bytes, type: Any) -> Any:
    return msgspec.json.decode(body, type=type) if body else None


def _child_environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    """This process's environment without its ``SIDECAR_*`` settings (a developer's admin token or
    data directory must not reach the test sidecar), plus what the test adds."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SIDECAR_")}
    return {**env, "PYTHONUNBUFFERED": "1", **(extra or {})}


class TestSidecar:
    """A real sidecar with ``services`` registered, for one test: ``async with TestSidecar([counter]) as sc:``.

    Options (all keyword-only):
    ``sidecar_args``: more ``sidecar serve`` flags (``["--retention", "604800"]``);
    ``handler_args``: more ``python -m handler_sdk`` flags (``["--suspend-after", "0"]``);
    ``env``: variables for both processes (the handler service reads its own from ``os.environ``);
    ``directory``: where the data directory and the logs go, kept afterwards (default: a temporary
    directory, removed afterwards);
    ``startup_timeout``: seconds each process may take to start;
    ``request_timeout``: seconds a call, an attach or any other request may take.
    """

    __test__ = False  # a harness, not a test class: pytest must not collect it from users' test modules

    def __init__(
        self, services: Iterable[Definition] | Definition, *, sidecar_args: Sequence[str] = (),
        handler_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
        directory: str | os.PathLike[str] | None = None, startup_timeout: float = 60.0,
        request_timeout: float = 60.0,
    ) -> None:
        self._targets = import_paths([services] if not isinstance(services, Iterable) else services)
        self._sidecar_args = list(sidecar_args)
        self._handler_args = list(handler_args)
        self._env = dict(env or {})
        self._keep = directory is not None
        self._directory = Path(directory) if directory is not None else None
        self._startup_timeout = startup_timeout
        self._request_timeout = request_timeout
        self._http: aiohttp.ClientSession | None = None
        self._sidecar: ChildProcess | None = None
        self._handler: ChildProcess | None = None
        self.ingress_url = ""
        self.admin_url = ""
        self.handler_url = ""

    # --- lifetime ---------------------------------------------------------------------------------

    async def __aenter__(self) -> TestSidecar:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if error is not None and not isinstance(error, HarnessError):  # a start failure has its log already
            sys.stderr.write(self.logs())
        await self.stop()

    @property
    def directory(self) -> Path:
        """Where the data directory (``data/``) and the two logs are."""
        if self._directory is None:
            raise RuntimeError("the TestSidecar has not started")
        return self._directory

    async def start(self) -> None:
        """Start the handler service, then the sidecar, and register the one with the other."""
        command = sidecar_command()
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="sidecar-test-"))
        self._directory.mkdir(parents=True, exist_ok=True)
        ingress, admin, handler_port = free_port(), free_port(), free_port()
        self.ingress_url, self.admin_url = f"http://127.0.0.1:{ingress}", f"http://127.0.0.1:{admin}"
        self.handler_url = f"http://127.0.0.1:{handler_port}"
        # The children import the services (and the sidecar) from where this process found them.
        env = {**_child_environment(self._env), "PYTHONPATH": os.pathsep.join(entry or os.getcwd() for entry in sys.path)}
        self._handler = ChildProcess(
            "handler service", [sys.executable, "-m", "handler_sdk", *self._targets, "--host", "127.0.0.1",
                                "--port", str(handler_port), *self._handler_args],
            self._directory / "handler.log", env, Path.cwd())
        self._sidecar = ChildProcess(
            "sidecar", [*command, "serve", "--data-dir", str(self._directory / "data"),
                        "--ingress", f"127.0.0.1:{ingress}", "--admin", f"127.0.0.1:{admin}",
                        "--durability", "none", "--workers", "1", "--test-clock", *self._sidecar_args],
            self._directory / "sidecar.log", env, Path.cwd())
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._request_timeout, connect=5.0))
        try:
            await self.start_handler()
            await self._start_sidecar()
            await self._request("POST", self.admin_url, "/deployments", body={"uri": self.handler_url})
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop both processes (SIGTERM, then SIGKILL) and remove the temporary directory."""
        if self._http is not None:
            await self._http.close()
            self._http = None
        for process in (self._sidecar, self._handler):
            if process is not None:
                await process.stop(_STOP_TIMEOUT_S)
        if self._directory is not None and not self._keep:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def kill_processes(self) -> None:
        """SIGKILL whatever still runs, without an event loop (a teardown's last resort)."""
        for process in (self._sidecar, self._handler):
            if process is not None:
                process.kill_now()

    def logs(self) -> str:
        """The end of the sidecar's and the handler service's logs."""
        return "".join(f"===== {p.name} ({p.log_path}) =====\n{p.log_tail()}\n"
                       for p in (self._sidecar, self._handler) if p is not None)

    # --- crashes ---------------------------------------------------------------------------------

    async def kill_handler(self, *, restart: bool = True) -> None:
        """SIGKILL the handler service, as a crash. With ``restart`` (the default) a fresh one is
        started on the same port and is serving when this returns, so the sidecar's next attempt
        replays there; ``restart=False`` leaves it down (the sidecar backs off) until
        :meth:`start_handler`."""
        await self._process(self._handler).kill()
        if restart:
            await self.start_handler()

    async def start_handler(self) -> None:
        """Start the handler service if it is not running; returns once it serves."""
        handler = self._process(self._handler)
        if handler.running:
            return
        handler.start()
        await handler.until_serving(lambda: self._ok(f"{self.handler_url}/discover"), "serving its services",
                                    self._startup_timeout)

    async def restart(self) -> None:
        """SIGKILL the sidecar and start it again on the same data directory and ports: what it
        had made durable is there, its test clock where tests moved it."""
        await self._process(self._sidecar).kill()
        await self._start_sidecar()

    async def _start_sidecar(self) -> None:
        sidecar = self._process(self._sidecar)
        sidecar.start()
        await sidecar.until_serving(lambda: self._ok(f"{self.admin_url}/health"), "serving", self._startup_timeout)

    def _process(self, process: ChildProcess | None) -> ChildProcess:
        if process is None or self._http is None:
            raise RuntimeError("the TestSidecar is not running: use it inside `async with`")
        return process

    # --- invocations -----------------------------------------------------------------------------

    @overload
    async def call(self, target: str, arg: Any = ..., *, type: type[T], idempotency_key: str | None = None,
                   headers: Mapping[str, str] | None = None) -> T: ...

    @overload
    async def call(self, target: str, arg: Any = ..., *, idempotency_key: str | None = None,
                   headers: Mapping[str, str] | None = None) -> Any: ...

    async def call(self, target: str, arg: Any = NO_ARGUMENT, *, type: Any = Any, idempotency_key: str | None = None,
                   headers: Mapping[str, str] | None = None) -> Any:
        """Call ``target`` (``Service/handler`` or ``Object/key/handler``) with ``arg`` (encoded as
        JSON; none: an empty body) and wait: its output, decoded as ``type``. A failure (the
        handler's, or the sidecar's refusal) raises :class:`SidecarError` with its code."""
        body = await self._request("POST", self.ingress_url, f"/{_segments(target)}", body=arg,
                                   headers=self._headers(idempotency_key, headers))
        return _decode(body, type)

    async def send(self, target: str, arg: Any = NO_ARGUMENT, *, delay: datetime.timedelta | float | None = None,
                   idempotency_key: str | None = None, headers: Mapping[str, str] | None = None) -> str:
        """Start ``target`` without waiting (``delay``: that much later on the sidecar's clock,
        a ``timedelta`` or seconds); its invocation ID. The same ``idempotency_key`` again is the
        same invocation."""
        query = "" if delay is None else f"?delay={_milliseconds(delay, 'delay')}ms"
        body = await self._request("POST", self.ingress_url, f"/{_segments(target)}/send{query}", body=arg,
                                   headers=self._headers(idempotency_key, headers))
        invocation_id: str = msgspec.json.decode(body)["invocationId"]
        return invocation_id

    async def attach(self, invocation_id: str, *, type: Any = Any) -> Any:
        """Wait for the invocation to end: its output, decoded as ``type``, or its failure raised
        as :class:`SidecarError`."""
        body = await self._request("GET", self.ingress_url, f"/restate/invocation/{quote(invocation_id, safe='')}/attach")
        return _decode(body, type)

    async def invocation(self, invocation_id: str) -> Invocation:
        """The invocation as the admin API shows it: status, reason, outcome and whole journal."""
        return decode_invocation(await self._request("GET", self.admin_url, f"/invocations/{quote(invocation_id, safe='')}"))

    async def wait_for(self, invocation_id: str, *statuses: Status, until: Callable[[Invocation], bool] | None = None,
                       timeout: float = 30.0) -> Invocation:
        """Poll the invocation until its status is one of ``statuses`` and ``until`` (if given)
        holds; with neither, until it has finished. Returns it; a ``TimeoutError`` saying where it
        was if ``timeout`` seconds pass first."""
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            raise ValueError(f"unknown status {unknown[0]!r}: one of {', '.join(sorted(STATUSES))}")
        wanted = frozenset(statuses) if statuses else (FINISHED if until is None else frozenset(STATUSES))
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            current = await self.invocation(invocation_id)
            if current.status in wanted and (until is None or until(current)):
                return current
            if time.monotonic() > deadline:
                raise TimeoutError(f"invocation {invocation_id} is {current.status} ({current.reason or 'no reason'}) "
                                   f"after {timeout:g} s of waiting for {' or '.join(sorted(wanted))}"
                                   f"{' and the condition' if until is not None else ''}")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    async def admin(self, method: str, path: str, body: Any = NO_ARGUMENT) -> Any:
        """Any admin API request (``"GET", "/invocations?status=failed"``; ``body`` sent as JSON):
        its answer, decoded; an error as :class:`SidecarError`."""
        return _decode(await self._request(method, self.admin_url, "/" + path.lstrip("/"), body=body,
                                           headers={"content-type": "application/json"}), Any)

    # --- time ------------------------------------------------------------------------------------

    async def advance(self, by: datetime.timedelta | float) -> datetime.datetime:
        """Move the sidecar's clock ``by`` forward (a ``timedelta``, or seconds): every durable
        timer, delayed send, retry back-off and invocation deadline that comes due fires at once,
        as if that time had passed. The new time."""
        shown = await self.admin("POST", "/test/clock", {"advance_ms": _milliseconds(by, "advance")})
        return _EPOCH + datetime.timedelta(milliseconds=shown["now_ms"])

    async def now(self) -> datetime.datetime:
        """The sidecar's time: the wall clock plus every advance so far."""
        shown = await self.admin("GET", "/test/clock")
        return _EPOCH + datetime.timedelta(milliseconds=shown["now_ms"])

    # --- HTTP ------------------------------------------------------------------------------------

    @staticmethod
    def _headers(idempotency_key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
        sent = {"content-type": "application/json", **(headers or {})}
        if idempotency_key is not None:
            sent["idempotency-key"] = idempotency_key
        return sent

    async def _ok(self, url: str) -> bool:
        assert self._http is not None
        async with self._http.get(url) as response:
            return response.status == 200

    async def _request(self, method: str, base: str, path: str, *, body: Any = NO_ARGUMENT,
                       headers: Mapping[str, str] | None = None) -> bytes:
        if self._http is None:
            raise RuntimeError("the TestSidecar is not running: use it inside `async with`")
        data = b"" if body is NO_ARGUMENT else msgspec.json.encode(body)
        async with self._http.request(method, base + path, data=data, headers=headers) as response:
            raw = await response.read()
            if response.status < 400:
                return raw
            try:
                problem = msgspec.json.decode(raw)
                message = problem["message"] if isinstance(problem, dict) else str(problem)
            except (msgspec.DecodeError, KeyError):
                message = raw.decode(errors="replace")[:500]
            raise SidecarError(response.status, message, response.headers.get("x-restate-id"))
