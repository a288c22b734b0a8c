"""The invoker: per-key scheduling, attempts over handler links, retries, timeouts, recovery."""

from .admission import Overloaded
from .engine import Invoker
from .operations import InvocationNotFound, InvocationStateError
from .waits import AwakeableCompleted, AwakeableNotFound, parse_awakeable_id

__all__ = [
    "AwakeableCompleted", "AwakeableNotFound", "InvocationNotFound", "InvocationStateError", "Invoker",
    "Overloaded", "parse_awakeable_id",
]
