"""Serving: the engine and its caches, store versions, rate limits, the spool, background work."""
