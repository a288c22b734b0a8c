"""The writer process: the only committer to the LMDB environment.

Why a process and not a thread: a writer thread must win the GIL back from a busy event loop
after every fsync, which under load made each commit wait milliseconds for a sub-millisecond
sync. Here the commit path never shares a GIL with request handling. The process serves one or
more sidecar processes over inherited sockets, and every pass commits whatever all of them sent
meanwhile in one transaction (group commit), then tells each the highest sequence number now
durable. It exits once every client has closed its socket, after committing what it received.

A failed write is never a reason to stop. A batch refused for its own contents (a key LMDB
cannot store) fails alone and its client is told so. A batch that fails for want of room (map
or disk full, an I/O error) fails too, and so does every later batch of the same client until
that client sends a submit whose ``resume`` is at least the failed batch's sequence number,
which it does only once everyone waiting on its batches has been told of the failure. Why a
fence and not "fail the rest of this group": batches the client sent before it heard of the
failure may arrive in the next pass, and if one of them committed (a small one, after a purge
made room) the store would hold a later batch without an earlier one, a gap the invoker does
not know of (an invocation's end committed without a state write before it). Behind the fence
every batch that could land past the gap fails; the client, knowing the rule, fails those
itself the moment it sees the first failure, so that the invoker hears of all of them before
it submits anything that may commit again.

"Full" is ``map_size`` bytes of data (see ``environment.headroom``): a batch that writes past it
fails for want of room before LMDB is asked, and the map's headroom past it is left to purges,
which LMDB could not otherwise commit in a map that small writes filled.

    python -m sidecar.store.writer --data-dir DIR --durability fsync --map-size BYTES --fd N [--fd M ...] [--blob-threshold BYTES]
"""

from __future__ import annotations

import argparse
import logging
import os
import selectors
import signal
import socket
from typing import Any

import lmdb

from handler_sdk import logs

from .batch import Put, WriteBatch
from .check import DamagedStore
from .blobs import DEFAULT_BLOB_THRESHOLD
from .environment import WriteFailed, commit_group, open_environment, used_bytes
from .wire import Committed, Submit, frame, split_frames, submit_decoder

log = logging.getLogger("sidecar.writer")

_READ_CHUNK = 1 << 20
_PAGE_RELEASE = WriteBatch([Put("meta", b"release", b"")])


class _Client:
    __slots__ = ("sock", "buffer", "open", "fenced")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.open = True
        #: The first failed sequence number and why: this client's batches fail until one
        #: carries a ``resume`` at least as high (see the module docstring).
        self.fenced: tuple[int, str] | None = None


class _Room:
    """What may still be written before the data reaches ``map_size``: an estimate from below
    (overwrites and purges are not counted), measured again only when it runs out.

    Once a write found no room, writes resume only when ``margin`` bytes more than they need
    are free: else, with a few bytes left, each small write that fits would let attempts start
    again, only to fail at their next write after their steps ran once more.
    """

    def __init__(self, env: lmdb.Environment, dbs: dict[str, Any], map_size: int) -> None:
        self._env, self._dbs, self.map_size = env, dbs, map_size
        self.margin = max(64 << 10, map_size >> 10)
        self._left = 0
        #: A write failed for want of room and no put has committed since.
        self.short = False

    def take(self, need: int, passing: int) -> bool:
        """Whether a batch putting ``need`` bytes fits, after ``passing`` bytes not committed yet."""
        wanted = need + self.margin if self.short else need
        if wanted > self._left:
            self._left = self.map_size - used_bytes(self._env, self._dbs) - passing
            if wanted > self._left:  # the rest of the map is the purges' headroom
                return False
        self._left -= need
        return True


def serve(data_dir: str, durability: str, map_size: int, sockets: list[socket.socket], blob_threshold: int) -> None:
    env, dbs = open_environment(data_dir, durability=durability, map_size=map_size)
    selector = selectors.DefaultSelector()
    clients = [_Client(sock) for sock in sockets]
    room = _Room(env, dbs, map_size)
    for client in clients:
        selector.register(client.sock, selectors.EVENT_READ, client)
    while any(c.open for c in clients):
        for key, _ in selector.select():
            _read_available(key.data, selector)
        submits = [(client, submit_decoder.decode(payload)) for client in clients
                   for payload in split_frames(client.buffer)]
        if not submits:
            continue
        results = _commit_pass(env, dbs, submits, room, blob_threshold)
        replies: dict[_Client, Committed] = {}
        for (client, submit), error in zip(submits, results):
            reply = replies.setdefault(client, Committed(upto=submit.seq))
            reply.upto = submit.seq
            if error is not None:
                reply.failed[submit.seq] = error.message
                if error.refused:
                    reply.refused.append(submit.seq)
        for client, reply in replies.items():
            if client.open:
                try:
                    client.sock.sendall(frame(reply))
                except OSError:
                    _close(client, selector)
    env.close()


def _commit_pass(env: lmdb.Environment, dbs: dict[str, Any], submits: list[tuple[_Client, Submit]],
                 room: _Room, blob_threshold: int) -> list[WriteFailed | None]:
    """Commit what this pass received, but no batch behind a fence or past ``map_size``."""
    results: list[WriteFailed | None] = [None] * len(submits)
    tried: list[int] = []
    passing = 0
    puts: set[int] = set()
    for n, (client, submit) in enumerate(submits):
        if client.fenced is not None and submit.resume >= client.fenced[0]:
            client.fenced = None
        need = _put_bytes(submit.batch)
        if client.fenced is not None:
            results[n] = WriteFailed(f"an earlier write failed: {client.fenced[1]}", refused=False)
        elif need and not room.take(need, passing):
            results[n] = WriteFailed(_full_message(room.map_size), refused=False)
            client.fenced = (submit.seq, results[n].message)  # type: ignore[union-attr]
        else:
            passing += need
            tried.append(n)
            if need:
                puts.add(n)
    for n, error in zip(tried, commit_group(env, dbs, [submits[n][1].batch for n in tried], blob_threshold)):
        results[n] = error
        client, submit = submits[n]
        if error is not None and not error.refused and client.fenced is None:
            client.fenced = (submit.seq, error.message)
    if room.short and any(error is None for error in results):
        # Pages a commit freed (a purge) are reused only once a later transaction has committed
        # (LMDB keeps the last snapshot whole): commit one now, so the room is there for the next.
        commit_group(env, dbs, [_PAGE_RELEASE], blob_threshold)
    failed = any(error is not None and not error.refused for error in results)
    room.short = failed or (room.short and all(results[n] is not None for n in puts))
    return results


def _put_bytes(batch: WriteBatch) -> int:
    return sum(len(op.key) + len(op.value) for op in batch.ops if type(op) is Put)


def _full_message(map_size: int) -> str:
    return (f"the store is full (map_size_bytes {map_size} in use): purge finished invocations "
            "or raise map_size_bytes")


def _read_available(client: _Client, selector: selectors.BaseSelector) -> None:
    """Everything the client has sent so far, without blocking; EOF closes the client."""
    while True:
        try:
            chunk = client.sock.recv(_READ_CHUNK, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            _close(client, selector)
            return
        client.buffer += chunk


def _close(client: _Client, selector: selectors.BaseSelector) -> None:
    if client.open:
        client.open = False
        selector.unregister(client.sock)
        client.sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sidecar.store.writer")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--durability", choices=["fsync", "none"], default="fsync")
    parser.add_argument("--map-size", type=int, required=True)
    parser.add_argument("--fd", type=int, action="append", required=True)
    parser.add_argument("--blob-threshold", type=int, default=DEFAULT_BLOB_THRESHOLD)
    args = parser.parse_args()
    # The sidecar's log options, inherited (see server.configure_logging).
    logs.configure_logging(os.environ.get("SIDECAR_LOG_LEVEL", "info"), os.environ.get("SIDECAR_LOG_FORMAT", "text"))
    # Ctrl-C and service managers signal the whole process group: the writer must outlive the
    # workers' shutdown to commit what they still send. It exits when the last one hangs up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sockets = [socket.socket(fileno=fd) for fd in args.fd]
    try:
        serve(args.data_dir, args.durability, args.map_size, sockets, args.blob_threshold)
    except DamagedStore as exc:  # the sidecar checked it first: damaged since
        log.critical("refusing to write: %s", exc)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
