"""``sidecar backup`` and ``sidecar check``: commands on a data directory itself, not on a server.

Both read through LMDB's own locking beside a serving sidecar, so neither stops it. A directory
that cannot be read at all, or a destination that cannot be written, is a one-line message with
exit status 2 (the operator must act, as for a bad setting); problems found inside a directory
exit 1.
"""

from __future__ import annotations

import click

from .client import ConfigFailure, echo_json
from .config import Settings

_DEFAULT_DATA_DIR = Settings().data_dir


@click.command()
@click.argument("destination", metavar="DEST", type=click.Path(dir_okay=True, file_okay=False))
@click.option("--data-dir", envvar="SIDECAR_DATA_DIR", default=_DEFAULT_DATA_DIR, show_default=True, metavar="DIR",
              help="The data directory to copy (it may be serving).")
def backup(destination: str, data_dir: str) -> None:
    """Copy the data directory to DEST while it serves.

    DEST must be a new directory. The copy holds everything committed before it began, compacted;
    `sidecar serve --data-dir DEST` runs from it.
    """
    from sidecar.store import LayoutError
    from sidecar.store.backup import BackupError, backup as take_backup
    from sidecar.store.check import DamagedStore

    try:
        report = take_backup(data_dir, destination)
    except (BackupError, DamagedStore, LayoutError) as exc:
        raise ConfigFailure(f"no backup taken: {exc}") from None
    click.echo(f"backed up {data_dir} to {report.destination}: {report.bytes:,} bytes in {report.seconds:.2f} s")


@click.command()
@click.option("--data-dir", envvar="SIDECAR_DATA_DIR", default=_DEFAULT_DATA_DIR, show_default=True, metavar="DIR",
              help="The data directory to verify (it may be serving).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def check(data_dir: str, as_json: bool) -> None:
    """Verify a data directory without serving it.

    Checks its layout, that every journal is whole and that every blob reference resolves.
    Exit status 1 if anything is wrong."""
    from sidecar.store import LayoutError
    from sidecar.store.check import DamagedStore
    from sidecar.store.verify import verify

    try:
        verdict = verify(data_dir)
    except (DamagedStore, LayoutError) as exc:
        raise ConfigFailure(f"cannot check: {exc}") from None
    if as_json:
        echo_json({**{name: getattr(verdict, name) for name in verdict.__struct_fields__}, "ok": verdict.ok})
    else:
        click.echo(f"{data_dir}: layout {verdict.layout}, {verdict.invocations:,} invocations, "
                   f"{verdict.journal_entries:,} journal entries, {verdict.blobs:,} blobs, "
                   f"{verdict.schedules:,} schedules")
        for note in verdict.notes:
            click.echo(f"note: {note}")
        for problem in verdict.problems:
            click.echo(f"problem: {problem}")
        if verdict.problem_count > len(verdict.problems):
            click.echo(f"... and {verdict.problem_count - len(verdict.problems):,} more problems")
        click.echo("ok" if verdict.ok else f"{verdict.problem_count:,} problems found")
    if not verdict.ok:
        raise SystemExit(1)
