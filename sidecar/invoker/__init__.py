"""The invoker: per-key scheduling, attempts over handler links, retries, timeouts, recovery."""

from .admission import Overloaded
from .engine import Invoker
from .operations import InvocationStateError
from .table import InvocationNotFound
from .state_edits import KeyHeld
from .awakeable_ids import parse_awakeable_id
from .waits import AwakeableCompleted, AwakeableNotFound

__all__ = [
    "AwakeableCompleted", "AwakeableNotFound", "InvocationNotFound", "InvocationStateError", "Invoker", "KeyHeld",
    "Overloaded", "parse_awakeable_id",
]
