"""The public surface of handler_sdk is pinned: adding or removing a name is a deliberate act."""

import handler_sdk


def test_exported_names_are_pinned() -> None:
    assert handler_sdk.__all__ == [
        "Service",
        "VirtualObject",
        "Workflow",
        "Context",
        "ObjectContext",
        "ObjectSharedContext",
        "WorkflowContext",
        "WorkflowSharedContext",
        "DurablePromise",
        "TerminalError",
        "NondeterminismError",
        "RetryPolicy",
        "serve",
        "app",
    ]
    for name in handler_sdk.__all__:
        assert getattr(handler_sdk, name) is not None
