"""The web side of the daemon: dashboard, WebSocket gateway, HTTP API and metrics on one port."""
