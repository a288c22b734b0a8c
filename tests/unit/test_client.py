"""handler_sdk.client without a sidecar: its pinned names, error mapping, and every mistake
refused before a request is made (the client points at a port where nothing listens, so a
request would be a ConnectionFailed instead)."""

from __future__ import annotations

import email.utils
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from hypothesis import given, strategies as st

import handler_sdk.client as client_module
from handler_sdk import ObjectContext, VirtualObject
from handler_sdk.client import (
    BadRequest, Client, ClientError, Conflict, ConnectionFailed, InvocationFailed, NotFound, NotReady, Overloaded,
    PayloadTooLarge,
)
from handler_sdk.client._codec import Target
from handler_sdk.client._errors import error_for, retry_after_s
from tests.client_typing.definitions import Order, add, approve, counter, get, run, signup, steps, typed
from tests.procs import free_port


def test_exported_names_are_pinned() -> None:
    assert client_module.__all__ == [
        "Client", "SendReceipt", "Seconds",
        "ServiceHandle", "ObjectHandle", "WorkflowHandle",
        "EventStream", "Event", "Milestone", "Token", "GrowthWarning", "End",
        "ClientError", "BadRequest", "NotFound", "Conflict", "PayloadTooLarge", "NotReady", "Overloaded",
        "InvocationFailed", "ConnectionFailed", "TimedOut",
    ]
    for name in client_module.__all__:
        assert getattr(client_module, name) is not None


@pytest.mark.parametrize(("status", "kind"), [
    (400, BadRequest), (404, NotFound), (409, Conflict), (413, PayloadTooLarge), (470, NotReady),
    (429, Overloaded), (503, Overloaded), (500, InvocationFailed), (422, InvocationFailed), (402, InvocationFailed),
])
def test_each_error_status_has_its_exception_with_code_message_and_invocation(status: int, kind: type) -> None:
    error = error_for(status, b'{"code": %d, "message": "why"}' % status, {"x-restate-id": "inv_1", "Retry-After": "2"})
    assert type(error) is kind and isinstance(error, ClientError)
    assert (error.code, error.message, error.invocation_id) == (status, "why", "inv_1")
    assert str(error) == f"{status}: why"
    if isinstance(error, Overloaded):
        assert error.retry_after == 2.0


def test_an_error_body_that_is_not_json_becomes_the_message() -> None:
    error = error_for(502, b"<html>bad gateway</html>", {})
    assert (error.code, error.message, error.invocation_id) == (502, "<html>bad gateway</html>", None)
    assert error_for(503, b"", {}).message == "HTTP 503"


def test_retry_after_is_seconds_or_an_http_date() -> None:
    assert retry_after_s(None) is None
    assert retry_after_s("1") == 1.0 and retry_after_s("-3") == 0.0
    assert retry_after_s("soon") is None and retry_after_s("nan") is None and retry_after_s("inf") is None
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 < cast(float, retry_after_s(in_ten)) <= 10


@pytest.fixture
async def nowhere() -> AsyncIterator[Client]:
    """A client of a port nothing listens on: any request it makes fails to connect."""
    async with Client(f"http://127.0.0.1:{free_port()}") as client:
        yield client


async def test_an_unreachable_sidecar_is_a_connection_failure(nowhere: Client) -> None:
    with pytest.raises(ConnectionFailed) as failed:
        await nowhere.call("Counter/alice/add", 1)
    assert failed.value.code is None and "cannot reach the sidecar" in failed.value.message
    with pytest.raises(ConnectionFailed):
        await anext(aiter(nowhere.events("inv_1", max_reconnects=0)))


@pytest.mark.parametrize("target", ["", "Counter", "/", "Counter//add", "a/b/c/d", "Counter/alice/add/send/x"])
async def test_a_target_that_is_not_a_path_is_refused_before_sending(nowhere: Client, target: str) -> None:
    with pytest.raises(ValueError, match="is not a target: write Service/handler or Object/key/handler"):
        await nowhere.call(target, 1)
    with pytest.raises(ValueError, match="is not a target"):
        await nowhere.send(target)


async def test_mistakes_are_refused_before_sending(nowhere: Client) -> None:
    untyped = cast(Any, nowhere)
    with pytest.raises(TypeError, match="Counter/alice/add: the argument cannot be encoded as JSON"):
        await nowhere.call("Counter/alice/add", object())
    with pytest.raises(TypeError, match="a target is a string"):
        await untyped.call(counter, 1)
    with pytest.raises(ValueError, match="idempotency key is 1025 bytes long"):
        await nowhere.call("Counter/alice/add", 1, idempotency_key="k" * 1025)
    with pytest.raises(ValueError, match="object key is 1025 bytes long"):
        await nowhere.call(f"Counter/{'k' * 1025}/add", 1)
    with pytest.raises(ValueError, match="a delay may be at most"):
        await nowhere.send("Counter/alice/add", 1, delay=1e12)
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        await nowhere.call("Counter/alice/add", 1, timeout=0)
    with pytest.raises(ValueError, match="budget= is -1"):
        await nowhere.call("Counter/alice/add", 1, budget=-1)
    with pytest.raises(TypeError, match="header 'x-n' must be a string"):
        await nowhere.call("Counter/alice/add", 1, headers=cast(Any, {"x-n": 1}))
    with pytest.raises(TypeError, match="the value cannot be encoded"):
        await nowhere.resolve_awakeable("awk_1", object())
    with pytest.raises(ValueError, match="the idempotency key is empty"):
        await nowhere.attach_by_key("Counter/alice/add", "")


async def test_the_typed_form_checks_the_handler_and_its_argument_before_sending(nowhere: Client) -> None:
    alice = cast(Any, nowhere.object(counter, "alice"))
    with pytest.raises(TypeError, match="Counter/add: n: expected int, got str"):
        await alice.call(add, "five")
    with pytest.raises(TypeError, match="Counter/alice/get takes no argument"):
        await alice.call(get, 1)
    with pytest.raises(TypeError, match="Counter/alice/add takes one argument, got 0"):
        await alice.call(add)
    with pytest.raises(TypeError, match="Steps/typed: order.quantity: expected int"):
        await cast(Any, nowhere.service(steps)).call(typed, {"item": "pen", "quantity": "two"})
    with pytest.raises(ValueError, match="run is not a handler registered on Counter"):
        await alice.call(run, "a@example.com")
    with pytest.raises(TypeError, match="is not a VirtualObject"):
        cast(Any, nowhere).object(steps, "alice")
    with pytest.raises(TypeError, match="is not a Service"):
        cast(Any, nowhere).service(counter)
    with pytest.raises(TypeError, match="is not a Workflow"):
        cast(Any, nowhere).workflow(counter, "k")
    with pytest.raises(ValueError, match="Signup/w/approve is not Signup's main handler"):
        await nowhere.workflow(signup, "w").attach(approve)

    other = VirtualObject("Other")

    @other.handler()
    async def add_elsewhere(ctx: ObjectContext, n: int) -> int:
        return n

    with pytest.raises(ValueError, match="add_elsewhere is not a handler registered on Counter"):
        await alice.call(add_elsewhere, 1)
    # What passes the checks is sent: a ConnectionFailed proves it got that far.
    with pytest.raises(ConnectionFailed):
        await nowhere.service(steps).call(typed, Order("pen", 1))


async def test_a_closed_client_says_so() -> None:
    client = Client(f"http://127.0.0.1:{free_port()}")
    await client.close()
    with pytest.raises(RuntimeError, match="this Client is closed"):
        await client.call("Counter/alice/add", 1)


def test_a_bad_url_or_option_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="must be http"):
        Client("127.0.0.1:8080")
    with pytest.raises(ValueError, match="overload_retries must be 0 or more"):
        Client("http://127.0.0.1:8080", overload_retries=-1)




def test_the_client_imports_nothing_of_the_sidecar() -> None:
    """It ships with the SDK, which installs without the sidecar."""
    code = "import sys, handler_sdk.client\nprint('\\n'.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [name for name in loaded if name == "sidecar" or name.startswith("sidecar.")] == []


@given(st.text(max_size=60))
def test_any_text_is_a_target_or_a_clear_value_error(text: str) -> None:
    try:
        target = Target.parse(text)
    except ValueError as exc:
        assert "is not a target" in str(exc) or "bytes long" in str(exc)
    else:
        assert 2 <= len(target.parts()) <= 3 and all(target.parts())
