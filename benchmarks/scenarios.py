"""The sidecar side of the benchmark scenarios: a handler service written with ``handler_sdk``.

    python -m handler_sdk benchmarks.scenarios:ALL --port 9080     # as benchmarks.run starts it
    python -m benchmarks.scenarios --port 9080                      # the same, through serve()

- ``Counter.add`` is ``examples.counter``'s, unchanged: what a user would write.
- ``Steps.run`` journals three sequential ``ctx.run`` steps with the same trivial async functions
  the baseline awaits directly (``benchmarks.logic``), so the difference is the cost of three
  durable checkpoints (each one acknowledged by the sidecar before the next step starts).
- ``Steps.guarded`` is ``Steps.run`` with a circuit breaker named on every step.
"""

from __future__ import annotations

import argparse

from examples.counter import counter
from handler_sdk import CircuitBreaker, Context, Service, serve

from benchmarks import logic

steps = Service("Steps")


@steps.handler()
async def run(ctx: Context, n: int) -> int:
    x = n
    for name, fn in logic.STEPS:
        x = await ctx.run(name, fn, x)
    return x


#: Closed throughout (the steps never fail): what a breaker costs a step that it lets through.
BENCH_BREAKER = CircuitBreaker("bench", failure_threshold=5, cool_down=30.0)


@steps.handler()
async def guarded(ctx: Context, n: int) -> int:
    """``run`` with every step naming a circuit breaker (``benchmarks.breaker`` compares the two)."""
    x = n
    for name, fn in logic.STEPS:
        x = await ctx.run(name, fn, x, breaker=BENCH_BREAKER)
    return x


ALL = [counter, steps]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scenarios", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=9080)
    args = p.parse_args(argv)
    serve(ALL, port=args.port)


if __name__ == "__main__":
    main()
