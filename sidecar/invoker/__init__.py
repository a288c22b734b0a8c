"""The invoker: per-key scheduling, attempts over handler links, retries, timeouts, recovery."""

from .engine import Invoker, InvocationNotFound, InvocationStateError

__all__ = ["InvocationNotFound", "InvocationStateError", "Invoker"]
