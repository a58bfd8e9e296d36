"""Analytics tracking: the event model, ingestion, storage and rollups, queries, the Segment
door, scheduled jobs, and the `analytics` command."""
