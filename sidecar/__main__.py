"""``python -m sidecar``: the ``sidecar`` command, for environments without its console script
on the PATH (the test harness, ``handler_sdk.testing``, runs it so)."""

from sidecar.cli.main import main

main()
