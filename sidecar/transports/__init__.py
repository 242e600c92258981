"""Transports that move flow and verdict batches between processes (ZeroMQ, WebSocket)."""
