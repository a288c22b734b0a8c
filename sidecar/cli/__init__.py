"""The ``sidecar`` command and the settings it reads (flags, environment, TOML)."""
