"""Peers for the side-by-side benchmark: Restate (server + Python SDK) and DBOS, installed from the
package registries into a scratch directory and driven with the same load generator and workloads.

    python -m benchmarks.peers.install          # idempotent: venv + pip, npm, writes status.json
    python -m benchmarks.run --peers            # installs if needed, then every system in one run

- ``install``: the scratch directory (default ``.bench/peers``): a venv of its own for restate-sdk,
  hypercorn, dbos and uvicorn (they never enter the project's venv), and ``npm/`` for
  ``@restatedev/restate-server``. What could not be installed is recorded with the reason.
- ``restate_app`` / ``dbos_app``: the same handler logic as ``benchmarks.scenarios``, written for
  each peer; they run in the peers' venv and import only ``benchmarks.logic`` from this repository.
- ``restate_ns``: run inside a loopback-only network namespace (``unshare -n``): starts the Restate
  server and the SDK service, runs the load there, writes the records to a JSON file.
- ``bench``: what ``benchmarks.run`` calls for each peer; ``common``: the phase result and the
  check that a peer's count of completed workflows equals the successful responses.
- ``requirements.txt``, ``package.json``: the pinned versions; ``hypercorn.toml``: the Restate SDK's
  own hypercorn settings.

This ``__init__`` imports nothing: the apps import ``benchmarks.peers.*`` from the peers' venv, which
has neither aiohttp nor msgspec. See docs/benchmarks.md.
"""
