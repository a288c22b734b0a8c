"""The writer process: the only committer to the LMDB environment.

Why a process and not a thread: a writer thread must win the GIL back from a busy event loop
after every fsync, which under load made each commit wait milliseconds for a sub-millisecond
sync. Here the commit path never shares a GIL with request handling. The process serves one or
more sidecar processes over inherited sockets, and every pass commits whatever all of them sent
meanwhile in one transaction (group commit), then tells each the highest sequence number now
durable. It exits once every client has closed its socket, after committing what it received.

    python -m sidecar.store.writer --data-dir DIR --durability fsync --map-size BYTES --fd N [--fd M ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import selectors
import signal
import socket

from handler_sdk import logs

from .environment import commit_group, open_environment
from .wire import Committed, frame, split_frames, submit_decoder

log = logging.getLogger("sidecar.writer")

_READ_CHUNK = 1 << 20


class _Client:
    __slots__ = ("sock", "buffer", "open")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.open = True


def serve(data_dir: str, durability: str, map_size: int, sockets: list[socket.socket]) -> None:
    env, dbs = open_environment(data_dir, durability=durability, map_size=map_size)
    selector = selectors.DefaultSelector()
    clients = [_Client(sock) for sock in sockets]
    for client in clients:
        selector.register(client.sock, selectors.EVENT_READ, client)
    while any(c.open for c in clients):
        for key, _ in selector.select():
            _read_available(key.data, selector)
        submits = [(client, submit_decoder.decode(payload)) for client in clients
                   for payload in split_frames(client.buffer)]
        if not submits:
            continue
        errors = commit_group(env, dbs, [submit.batch for _, submit in submits])
        replies: dict[_Client, Committed] = {}
        for (client, submit), error in zip(submits, errors):
            reply = replies.setdefault(client, Committed(upto=submit.seq))
            reply.upto = submit.seq
            if error is not None:
                reply.failed[submit.seq] = error
        for client, reply in replies.items():
            if client.open:
                try:
                    client.sock.sendall(frame(reply))
                except OSError:
                    _close(client, selector)
    env.close()


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
    args = parser.parse_args()
    # The sidecar's log options, inherited (see server.configure_logging).
    logs.configure_logging(os.environ.get("SIDECAR_LOG_LEVEL", "info"), os.environ.get("SIDECAR_LOG_FORMAT", "text"))
    # Ctrl-C and service managers signal the whole process group: the writer must outlive the
    # workers' shutdown to commit what they still send. It exits when the last one hangs up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sockets = [socket.socket(fileno=fd) for fd in args.fd]
    serve(args.data_dir, args.durability, args.map_size, sockets)


if __name__ == "__main__":
    main()
