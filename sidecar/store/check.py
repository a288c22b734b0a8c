"""A data directory is checked before LMDB maps it: damaged data is refused, never served.

LMDB trusts its file. A ``data.mdb`` cut short is mapped and read past its end (SIGBUS, no
message), or opened as if nothing were wrong and its missing pages served as zeros; an empty one
is silently initialised as a new, empty store. So before ``lmdb.open`` the file must be whole
enough to be what LMDB wrote: a multiple of its page size, both meta pages present, each with
LMDB's magic and data version, and the last page the newest of them names inside the file.

The layout read here is LMDB's (``libraries/liblmdb/mdb.c`` of https://github.com/LMDB/lmdb,
``MDB_page``, ``MDB_meta``, ``MDB_db`` and ``mdb_env_read_header``), on a 64-bit little-endian
build, the only one the sidecar ships on: a 16-byte page header (``mp_pgno``, ``mp_pad``,
``mp_flags``, ``mp_lower``, ``mp_upper``), then ``MDB_meta``: ``mm_magic`` (``0xBEEFC0DE``),
``mm_version`` (1), ``mm_address``, ``mm_mapsize``, two 48-byte ``MDB_db`` (the free DB's
``md_pad`` holds the page size, ``mm_psize``), ``mm_last_pg``, ``mm_txnid``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

_MAGIC = 0xBEEFC0DE
_DATA_VERSION = 1
_P_META = 0x08
_PAGE_HEADER = struct.Struct("<QHH")  # mp_pgno, mp_pad, mp_flags (mp_lower, mp_upper follow)
_META = struct.Struct("<IIQQ48s48sQQ")  # at offset 16 of a meta page
_META_OFFSET = 16
_FREE_DB_PAD = struct.Struct("<I")  # md_pad of the free DB: the page size
_MIN_PAGE, _MAX_PAGE = 512, 65536


class DamagedStore(Exception):
    """The data directory cannot be served as it is; the message names the file and the damage."""


def check_data_dir(path: str | Path) -> None:
    """Raise :class:`DamagedStore` if ``path`` is not a directory LMDB can safely open.

    A missing directory, or one without ``data.mdb``, is a new store and passes.
    """
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise DamagedStore(f"{directory}: the data directory is not a directory")
    data = directory / "data.mdb"
    try:
        with data.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            head = file.read(2 * _MAX_PAGE)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DamagedStore(f"{data}: cannot be read: {exc.strerror or exc}") from None
    if size == 0:
        raise DamagedStore(f"{data}: the file is empty (a store holds at least its two meta pages)")
    page_size = _page_size(data, head)
    if size % page_size:
        raise DamagedStore(f"{data}: {size} bytes is not a whole number of {page_size}-byte pages (truncated?)")
    if size < 2 * page_size:
        raise DamagedStore(f"{data}: {size} bytes cannot hold the two {page_size}-byte meta pages")
    metas = [_meta(data, head, n, page_size) for n in (0, 1)]
    last_page, txnid = max(metas, key=lambda meta: meta[1])
    pages = size // page_size
    if last_page >= pages:
        raise DamagedStore(f"{data}: the newest meta page (transaction {txnid}) uses pages up to {last_page}, "
                           f"but the file holds {pages} (truncated)")


def _page_size(data: Path, head: bytes) -> int:
    if len(head) < _META_OFFSET + _META.size:
        raise DamagedStore(f"{data}: {len(head)} bytes are too short for an LMDB meta page")
    magic, version, _, _, free_db, _, _, _ = _META.unpack_from(head, _META_OFFSET)
    if magic != _MAGIC:
        raise DamagedStore(f"{data}: not an LMDB file (meta page 0 has magic {magic:#010x})")
    if version != _DATA_VERSION:
        raise DamagedStore(f"{data}: LMDB data version {version}, this build reads {_DATA_VERSION}")
    page_size: int = _FREE_DB_PAD.unpack_from(free_db)[0]
    if not _MIN_PAGE <= page_size <= _MAX_PAGE or page_size & (page_size - 1):
        raise DamagedStore(f"{data}: meta page 0 names an impossible page size of {page_size} bytes")
    return page_size


def _meta(data: Path, head: bytes, number: int, page_size: int) -> tuple[int, int]:
    """(last page, transaction ID) of meta page ``number``, which must be intact."""
    offset = number * page_size
    pgno, _, flags = _PAGE_HEADER.unpack_from(head, offset)
    magic, version, _, _, _, _, last_page, txnid = _META.unpack_from(head, offset + _META_OFFSET)
    if pgno != number or not flags & _P_META or magic != _MAGIC or version != _DATA_VERSION:
        raise DamagedStore(f"{data}: meta page {number} is damaged")
    return last_page, txnid
