"""The durable sidecar: ingress, admin, invoker, LMDB store and CLI."""
