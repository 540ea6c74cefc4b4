"""Where money moves: one-click accept, decline, order ingest and attribution."""
