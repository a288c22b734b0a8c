"""What the SDK needs beyond aiohttp and msgspec comes with its extras: a feature asked for
without its extra installed says which one to install."""

from __future__ import annotations

#: The SDK's distribution, as ``pip install`` names it.
DISTRIBUTION = "durable-handler-sdk"


class MissingExtra(ImportError):
    """A feature was asked for, and the extra that provides its packages is not installed."""

    def __init__(self, extra: str, feature: str, missing: str | None) -> None:
        super().__init__(missing_extra(extra, feature, missing), name=missing)
        self.extra = extra


def missing_extra(extra: str, feature: str, missing: str | None) -> str:
    """``feature`` needs ``extra``, whose module ``missing`` could not be imported: how to install it."""
    lacking = f" ({missing} is not installed)" if missing else ""
    return f"{feature} needs the SDK's {extra!r} extra{lacking}: pip install '{DISTRIBUTION}[{extra}]'"
