"""The seed's story, run under chaos: agents that survive SIGKILLs and a vendor outage.

Starts the fake vendors, the agent's handler service and a sidecar (LMDB under a temporary
directory), sends a few 40-step agent runs, and meanwhile SIGKILLs the handler service and the
sidecar at random moments while the premium LLM is in a long outage. A human approves each run
(one is left to its deadline in the long form); a client follows one run's tokens over SSE. Then
it prints what the outside world saw and exits 1 if anything happened twice or not at all.

    make demo-chaos                                    # the long form
    .venv/bin/python -m examples.agent.demo --short    # the short form (make test runs it)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from handler_sdk.client import Client, ClientError, Conflict, ConnectionFailed, Milestone, Overloaded, Token

from .processes import PYTHON, Process, environment, free_port, wait_until_up
from .workflow import Report, Task, agent, approval, run

T = TypeVar("T")


@dataclass
class Settings:
    runs: int
    kills: int
    outage_s: float
    seed: int
    #: Keys of runs nobody approves: they take the deadline's path.
    unapproved: set[str] = field(default_factory=set)
    deadline_s: float = 300.0


SHORT = Settings(runs=2, kills=4, outage_s=4.0, seed=7)
LONG = Settings(runs=5, kills=14, outage_s=10.0, seed=11, unapproved={"order-5"}, deadline_s=20.0)


@dataclass
class Tally:
    replayed: int = 0  # steps journaled when a kill came: the next attempt replays them
    tokens: int = 0
    milestones: list[str] = field(default_factory=list)
    kills: list[str] = field(default_factory=list)


class Demo:
    def __init__(self, settings: Settings, work: Path, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.http = http
        self.rng = random.Random(settings.seed)
        self.tally = Tally()
        ports = {name: free_port() for name in ("vendors", "handlers", "ingress", "admin")}
        self.vendors_url = f"http://127.0.0.1:{ports['vendors']}"
        self.handlers_url = f"http://127.0.0.1:{ports['handlers']}"
        self.ingress = f"http://127.0.0.1:{ports['ingress']}"
        self.admin = f"http://127.0.0.1:{ports['admin']}"
        env = environment(VENDORS_URL=self.vendors_url)
        self.vendors = Process("vendors", [PYTHON, "-m", "examples.agent.vendors", "--port", str(ports["vendors"])],
                               work, env)
        self.handlers = Process("handlers", [PYTHON, "-m", "handler_sdk", "examples.agent.workflow:agent",
                                             "--port", str(ports["handlers"])], work, env)
        self.sidecar = Process("sidecar", [
            PYTHON, "-m", "sidecar.cli.main", "serve", "--data-dir", str(work / "data"),
            "--ingress", f"127.0.0.1:{ports['ingress']}", "--admin", f"127.0.0.1:{ports['admin']}",
            "--register", self.handlers_url, "--inactivity-timeout", "5"], work, env)
        #: The sidecar's ingress, for the runs (typed from examples.agent.workflow).
        self.client = Client(self.ingress)
        self.ids: dict[str, str] = {}

    # --- processes ---------------------------------------------------------------------------

    async def start(self, process: Process) -> None:
        process.start()
        url = {"vendors": f"{self.vendors_url}/stats", "handlers": f"{self.handlers_url}/discover",
               "sidecar": f"{self.admin}/health"}[process.name]
        await wait_until_up(self.http, url, process)

    async def start_all(self) -> None:
        await self.start(self.vendors)
        await self.start(self.handlers)
        await self.start(self.sidecar)

    def stop_all(self) -> None:
        for process in (self.sidecar, self.handlers, self.vendors):
            process.stop()

    async def chaos(self) -> None:
        """SIGKILL the handler service or the sidecar, at random moments, ``kills`` times."""
        for _ in range(self.settings.kills):
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            victim = self.sidecar if self.rng.random() < 0.4 else self.handlers
            self.tally.replayed += await self.journaled_steps()
            victim.kill()
            self.tally.kills.append(victim.name)
            await self.start(victim)

    async def outage(self) -> None:
        await self.vendor_call("/outage/premium", {"down": True})
        await asyncio.sleep(self.settings.outage_s)
        await self.vendor_call("/outage/premium", {"down": False})

    # --- HTTP, patient with a sidecar that is being restarted ----------------------------------

    async def patiently(self, request: Callable[[], Awaitable[T]]) -> T:
        """``request()``, again while the sidecar is down or refuses for now (each use here is
        safe to repeat: a workflow's run starts once per key, and attaching changes nothing)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return await request()
            except (ConnectionFailed, Overloaded):
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)

    async def _request(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        deadline = time.monotonic() + 60
        while True:
            try:
                async with self.http.request(method, url, json=body) as response:
                    if response.status != 503:
                        return response.status, await response.json(content_type=None)
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)

    async def vendor_call(self, path: str, body: Any = None) -> Any:
        method = "GET" if body is None else "POST"
        return (await self._request(method, f"{self.vendors_url}{path}", body))[1]

    async def journaled_steps(self) -> int:
        """How many steps the unfinished runs have journaled: what a kill now makes them replay."""
        total = 0
        for invocation_id in self.ids.values():
            status, shown = await self._request("GET", f"{self.admin}/invocations/{invocation_id}")
            if status == 200 and shown["status"] not in ("completed", "failed"):
                total += sum(1 for entry in shown["journal"] if entry["kind"] == "Run")
        return total

    # --- the runs -----------------------------------------------------------------------------

    async def send_runs(self) -> None:
        for i in range(1, self.settings.runs + 1):
            key = f"order-{i}"
            task = Task(customer=f"customer-{i}", email=f"customer-{i}@example.com", goal="a team plan",
                        amount_cents=4900 + i, approval_deadline_s=self.settings.deadline_s)
            sent = await self.patiently(lambda: self.client.workflow(agent, key).send(run, task))
            self.ids[key] = sent.invocation_id

    async def approve(self, key: str) -> None:
        """A human: waits for the run's awakeable, then resolves it."""
        while not (awakeable := await self.patiently(lambda: self.client.workflow(agent, key).call(approval))):
            await asyncio.sleep(0.2)
        await asyncio.sleep(self.rng.uniform(0.1, 1.0))  # a human takes a moment
        try:
            await self.patiently(lambda: self.client.resolve_awakeable(awakeable, "approved"))
        except Conflict:
            pass  # resolved by a try whose answer a kill cut off

    async def follow(self, key: str) -> None:
        """A client reading one run's milestones and tokens; the stream reconnects by itself
        (with Last-Event-ID) each time the sidecar is killed."""
        async with self.client.events(self.ids[key], max_reconnects=60) as stream:
            async for event in stream:
                if isinstance(event, Token):
                    self.tally.tokens += 1
                elif isinstance(event, Milestone) and isinstance(event.data, dict) and "stage" in event.data:
                    self.tally.milestones.append(str(event.data["stage"]))

    async def outputs(self) -> dict[str, Report | ClientError]:
        found: dict[str, Report | ClientError] = {}
        for key in self.ids:
            try:
                found[key] = await self.patiently(lambda: self.client.workflow(agent, key).attach(run))
            except ClientError as failed:
                found[key] = failed
        return found

    async def run(self) -> int:
        await self.start_all()
        await self.send_runs()
        background = [asyncio.create_task(self.follow("order-1")), asyncio.create_task(self.outage())]
        background += [asyncio.create_task(self.approve(key)) for key in self.ids if key not in self.settings.unapproved]
        await self.chaos()
        outputs = await self.outputs()
        await asyncio.wait_for(asyncio.gather(*background), 60)
        return await self.report(outputs)

    # --- what the world saw -------------------------------------------------------------------

    async def report(self, outputs: dict[str, Report | ClientError]) -> int:
        world = await self.vendor_call("/stats")
        costs = (await self._request("GET", f"{self.admin}/costs?service=Agent"))[1]
        details = {key: (await self._request("GET", f"{self.admin}/invocations/{i}"))[1] for key, i in self.ids.items()}
        problems: list[str] = []
        print(f"{len(self.ids)} agent runs of 40 steps; SIGKILLs: {self.tally.kills.count('handlers')} of the "
              f"handler service, {self.tally.kills.count('sidecar')} of the sidecar; the premium model down for "
              f"{self.settings.outage_s:g} s")
        for key, output in outputs.items():
            customer = f"customer-{key.split('-')[1]}"
            emails = [e["kind"] for e in world["emails"] if e["to"] == f"{customer}@example.com"]
            invoices = [i for i in world["invoices"] if i["customer"] == customer]
            record = world["crm"].get(customer, {})
            whole = sorted(record) == ["amount_cents", "decision", "email", "name", "summary"]
            decision = output.decision if isinstance(output, Report) else f"failed: {output}"
            detail = details[key]
            print(f"  {key}: {decision}; emails {sorted(emails)}; invoices {len(invoices)}; CRM record "
                  f"{'whole' if whole else sorted(record)}; spent {detail['cost']:.4f} of budget 1.00; "
                  f"{detail['attempts']} attempts")
            expected = "not approved in time" if key in self.settings.unapproved else "approved"
            if decision != expected:
                problems.append(f"{key} ended {decision!r}, expected {expected!r}")
            if sorted(emails) != ["confirmed", "received"] or len(invoices) != 1 or not whole:
                problems.append(f"{key}: emails {emails}, invoices {len(invoices)}, CRM {sorted(record)}")
        calls, replayed = world["calls"], world["replayed"]
        repeats = sum(replayed.values())
        print(f"money: the sidecar counted {costs['total']:.4f} over {costs['invocations']} runs "
              f"(budget 1.00 each); the vendors billed {world['billed']:.4f} (failed premium calls cut by a kill "
              f"before their step ended are billed but not journaled)")
        print(f"steps: {self.tally.replayed} replayed from the journal after kills instead of run again; "
              f"{repeats} vendor calls were repeats of a step cut by a kill, answered by the vendor's "
              f"idempotency record and not done twice ({replayed})")
        by_step = costs["by_step"]
        llm = {name: cost for name, cost in by_step.items() if name == "plan" or name.startswith(("think", "summ"))}
        fallbacks = sum(1 for d in details.values() for e in d["journal"] if e.get("variant") == "fallback")
        status, breakers = await self._request("GET", f"{self.admin}/breakers")
        premium = [b for b in breakers.get("breakers", []) if b["name"] == "premium"] if status == 200 else []
        print(f"outage: {fallbacks} LLM steps answered by the cheap model; {world['while_down']} calls reached "
              f"the premium model while it was down, where a fallback alone would have made at least "
              f"{2 * fallbacks} (two failures before each fallback): the breaker (now "
              f"{premium[0]['state'] if premium else 'closed'}) sent the rest to the cheap model at once; "
              f"{calls.get('premium', 0)} premium calls and {calls.get('cheap', 0)} cheap ones in all; LLM steps "
              f"cost {sum(llm.values()):.4f}")
        print(f"stream: the client got {self.tally.tokens} summary tokens and {len(self.tally.milestones)} "
              f"milestones of order-1")
        if self.tally.tokens == 0:
            problems.append("no token reached the client")
        for problem in problems:
            print(f"PROBLEM: {problem}")
        print("OK: every side effect happened exactly once" if not problems else "FAILED")
        return 1 if problems else 0


async def amain(settings: Settings, keep: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix="agent-demo-"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        demo = Demo(settings, work, http)
        try:
            return await demo.run()
        finally:
            await demo.client.close()
            demo.stop_all()
            if keep:
                print(f"logs and data: {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="fewer runs and kills (the form make test runs)")
    parser.add_argument("--keep", action="store_true", help="keep the logs and the data directory")
    args = parser.parse_args()
    sys.exit(asyncio.run(amain(SHORT if args.short else LONG, args.keep)))


if __name__ == "__main__":
    main()
