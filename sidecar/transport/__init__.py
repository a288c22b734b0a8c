"""Reaching handler services: the deployments registry (discovery) and the links attempts run
over (WebSocket, or one request per attempt)."""
