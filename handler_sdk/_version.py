"""The release of both distributions built from this repository, durable-handler-sdk and
durable-sidecar (which depends on this same one): the one place it is written; each build reads it."""

__version__ = "0.1.0"
