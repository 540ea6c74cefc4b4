"""The shared backend: Redis or Redis Cluster, one hash tag per store."""
