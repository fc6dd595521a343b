"""Shared I/O: the API client, watch-fed caches, server-side apply, Events, NIM probes, the
readiness gate, leader election, per-object workers and the operator's own metrics."""
