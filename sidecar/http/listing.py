"""``GET /invocations``: the invocation list, one bounded page at a time, newest first.

A page is one read of the store (``Store.list_invocations``: at most ``LIST_BUDGET`` index
entries in one short read transaction, however little matches) and one question to the workers
that own the unfinished invocations on it, for their live records: the store lags (``running`` is
never written), and only the owner knows. Nothing reads every record, in the store or in a
worker's memory, so a list call never holds up the ingress that shares the event loop. A page may
come back short, even empty, with a cursor: its budget ran out before ``limit`` matches did.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Mapping

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from .errors import HTTPProblem
from ..ids import looks_like_invocation_id, partition_of_id
from ..invoker.live import Live
from ..process.mesh import Mesh, MeshError, answer_body
from ..process.partitions import PartitionMap
from ..store import InvocationRecord, Store
from ..store.lmdb_store import LIST_BUDGET
from ..store.records import ALL_STATUSES, FINISHED

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_CURSOR_TAG = b"1:"

_ids_encoder = msgspec.msgpack.Encoder()
_ids_decoder = msgspec.msgpack.Decoder(list[str])
_records_decoder = msgspec.msgpack.Decoder(list[InvocationRecord])


class ListQuery(msgspec.Struct, frozen=True, kw_only=True):
    status: str | None = None
    service: str | None = None
    key: str | None = None
    limit: int = DEFAULT_LIMIT
    #: Where the previous page ended: this page lists older invocations only.
    before: str | None = None


def cursor_of(invocation_id: str) -> str:
    """The opaque ``next_cursor`` of a page that ended at ``invocation_id``."""
    return base64.urlsafe_b64encode(_CURSOR_TAG + invocation_id.encode()).decode().rstrip("=")


def _position(cursor: str) -> str:
    """The invocation ID ``cursor`` names; only what ``cursor_of`` makes is accepted."""
    refusal = HTTPProblem(400, f"{cursor[:60]!r} is not a cursor: pass a page's next_cursor as it came")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise refusal from None
    invocation_id = raw[len(_CURSOR_TAG):].decode(errors="replace")
    if not raw.startswith(_CURSOR_TAG) or not looks_like_invocation_id(invocation_id) \
            or cursor_of(invocation_id) != cursor:
        raise refusal
    return invocation_id


def parse_query(query: Mapping[str, str]) -> ListQuery:
    """``status``, ``service``, ``key``, ``limit`` and ``cursor``; :class:`HTTPProblem` 400 saying
    which is wrong."""
    status = query.get("status") or None
    if status is not None and status not in ALL_STATUSES:
        raise HTTPProblem(400, f"unknown status {status!r}; one of {', '.join(sorted(ALL_STATUSES))}")
    try:
        limit = int(query.get("limit", str(DEFAULT_LIMIT)))
    except ValueError:
        raise HTTPProblem(400, f"limit must be an integer, not {query['limit'][:60]!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise HTTPProblem(400, f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    cursor = query.get("cursor")
    return ListQuery(status=status, service=query.get("service") or None, key=query.get("key") or None,
                     limit=limit, before=_position(cursor) if cursor is not None else None)


#: The live records of the given unfinished invocations (those some worker holds).
LiveLookup = Callable[[list[str]], Awaitable[dict[str, InvocationRecord]]]


async def list_page(store: Store, query: ListQuery, live: LiveLookup, *,
                    examined: int = LIST_BUDGET) -> tuple[list[InvocationRecord], str | None]:
    """One page: its records as they stand now, and the ID the next page goes on below
    (``None``: this was the last)."""
    by_live_status = query.status is not None and query.status not in FINISHED
    # A status an invocation can leave needs the live records to tell: then every candidate
    # within the budget is read, and the page cut at ``limit`` after the live ones are known.
    page = store.list_invocations(
        status=query.status, service=query.service, key=query.key, before=query.before, budget=examined,
        limit=examined if by_live_status else query.limit)
    current = await live([r.id for r in page.records if not r.finished])
    records = [current.get(r.id, r) for r in page.records]
    if by_live_status:
        records = [r for r in records if r.status == query.status]
    if len(records) > query.limit:
        records = records[:query.limit]
        return records, records[-1].id
    return records, page.next


class LiveRecords:
    """Asks each worker for the live records of the invocations it owns (``admin.live`` on the
    mesh): only those on one page, so that the answer stays as bounded as the page."""

    def __init__(self, active: Mapping[str, Live], partitions: PartitionMap, mesh: Mesh | None) -> None:
        self._active = active
        self._partitions = partitions
        self._mesh = mesh
        if mesh is not None:
            mesh.handlers["admin.live"] = self._answer

    def _held(self, invocation_ids: list[str]) -> list[InvocationRecord]:
        return [live.record for i in invocation_ids if (live := self._active.get(i)) is not None]

    async def __call__(self, invocation_ids: list[str]) -> dict[str, InvocationRecord]:
        """A worker that cannot be asked leaves its invocations' stored status."""
        found = {r.id: r for r in self._held(invocation_ids)}
        if self._mesh is None:
            return found
        asked: dict[int, list[str]] = {}
        for invocation_id in invocation_ids:
            partition = partition_of_id(invocation_id)
            if invocation_id not in found and partition is not None and not self._partitions.owns(partition):
                asked.setdefault(self._partitions.owner(partition), []).append(invocation_id)
        mesh = self._mesh
        answers = await asyncio.gather(
            *(mesh.forward(owner, "admin.live", "POST", "/", {}, CIMultiDict(), _ids_encoder.encode(ids))
              for owner, ids in asked.items()),
            return_exceptions=True)
        for owner, answer in zip(asked, answers):
            if isinstance(answer, MeshError):
                log.warning("listing invocations without worker %d's live statuses: %s", owner, answer)
            elif isinstance(answer, BaseException):
                raise answer
            elif answer.status != 200:
                log.warning("listing invocations without worker %d's live statuses: it answered %d",
                            owner, answer.status)
            else:
                found.update((r.id, r) for r in _records_decoder.decode(answer_body(answer)))
        return found

    async def _answer(self, method: str, path: str, query: dict[str, str], headers: CIMultiDict[str],
                      body: bytes) -> web.Response:
        return web.Response(body=_ids_encoder.encode(self._held(_ids_decoder.decode(body))))
