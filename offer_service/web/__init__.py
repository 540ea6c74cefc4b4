"""The HTTP edge: the dispatch seam, telemetry, wire models, OpenAPI and thin endpoints."""
