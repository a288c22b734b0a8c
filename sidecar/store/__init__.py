"""The sidecar's durable store: LMDB, typed records, group-committed write batches."""

from .batch import WriteBatch, apply_batch
from .changes import Changes
from .layout import LayoutError
from .lmdb_store import Store
from .writer_client import StoreError
from .records import FINISHED, DeploymentRecord, IdempotencyRecord, InvocationRecord

__all__ = [
    "Changes", "DeploymentRecord", "FINISHED", "IdempotencyRecord", "InvocationRecord", "LayoutError", "Store",
    "StoreError",
    "WriteBatch", "apply_batch",
]
