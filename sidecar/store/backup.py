"""``sidecar backup DEST``: a consistent, compacted copy of a data directory, taken while it serves.

LMDB copies from one read transaction (``mdb_env_copy2`` with ``MDB_CP_COMPACT``): the copy holds
exactly what was committed when it began, and the serving writer is never paused, only kept from
reusing the pages that transaction still sees until the copy ends. Compaction writes live pages
only, renumbered, so the copy is as small as the data. It is written into a hidden directory beside
``DEST``, synced, and renamed to ``DEST`` last: a ``DEST`` that exists is a whole backup, never a
half-written one.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import lmdb
import msgspec

from .environment import open_snapshot_source


class BackupError(Exception):
    """The backup cannot be taken (the destination is wrong, or the disk refused); nothing was left at DEST."""


class BackupReport(msgspec.Struct, frozen=True):
    destination: str
    bytes: int
    seconds: float


def _refuse_destination(destination: Path) -> None:
    if destination.exists() or destination.is_symlink():
        raise BackupError(f"{destination} already exists: a backup goes to a new directory")
    parent = destination.parent
    if not parent.is_dir():
        raise BackupError(f"{parent} is not a directory: create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BackupError(f"{parent} is not writable")


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup(source: str | Path, destination: str | Path) -> BackupReport:
    """Copy the data directory ``source`` to the new directory ``destination``.

    Raises ``check.DamagedStore`` or ``LayoutError`` for a source that cannot be read, and
    :class:`BackupError` for a destination that cannot be written.
    """
    env, _ = open_snapshot_source(source)
    try:
        return copy_environment(env, destination)
    finally:
        env.close()


def copy_environment(env: lmdb.Environment, destination: str | Path) -> BackupReport:
    """Copy the open environment ``env`` to the new directory ``destination`` (a cluster node
    snapshots its own store this way: LMDB refuses a second open in one process)."""
    started = time.monotonic()
    target = Path(destination).absolute()
    _refuse_destination(target)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    except OSError as exc:
        raise BackupError(f"cannot write the backup in {target.parent}: {exc.strerror or exc}") from None
    try:
        env.copy(str(staging), compact=True)
        copied = staging / "data.mdb"
        _sync(copied)
        os.rename(staging, target)
        _sync(target.parent)
    except BaseException as exc:
        for leftover in staging.glob("*"):
            leftover.unlink()
        staging.rmdir()
        if isinstance(exc, OSError):
            raise BackupError(f"cannot write the backup in {target.parent}: {exc.strerror or exc}") from None
        if isinstance(exc, lmdb.Error):
            raise BackupError(f"cannot write the backup in {target.parent}: {exc}") from None
        raise
    return BackupReport(destination=str(target), bytes=(target / "data.mdb").stat().st_size,
                        seconds=time.monotonic() - started)
