"""Calling the counter (examples/counter.py) from Python with the typed client.

With `make run` going (or any sidecar that has the counter registered):

    .venv/bin/python -m examples.counter_client                 # key "alice" on 127.0.0.1:8080
    .venv/bin/python -m examples.counter_client --key bob --ingress http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta

from handler_sdk.client import Client

from .counter import add, counter, get


async def main(ingress: str, key: str) -> None:
    async with Client(ingress) as client:
        on_key = client.object(counter, key)
        total = await on_key.call(add, 5)  # an int, as add's annotation says
        print(f"add(5) -> {total}")
        # One-way, a second from now; the idempotency key makes a rerun of this script send nothing new.
        receipt = await on_key.send(add, 2, delay=timedelta(seconds=1), idempotency_key=f"{key}-later")
        print(f"send add(2): {receipt.status} {receipt.invocation_id}")
        print(f"its result, once it ran -> {await client.attach(receipt)}")
        print(f"get() -> {await on_key.call(get)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ingress", default="http://127.0.0.1:8080", help="the sidecar's ingress URL")
    parser.add_argument("--key", default="alice", help="the counter's key")
    args = parser.parse_args()
    asyncio.run(main(args.ingress, args.key))
