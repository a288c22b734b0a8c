"""The test handlers and the spending ones in one service: everything a webhook can tell of."""

from tests.e2e.costly import SERVICES as COSTLY
from tests.e2e.handlers import SERVICES as HANDLERS

SERVICES = [*HANDLERS, *COSTLY]
