"""Renderers: plans, status tables, progress, logs and summaries. Each writes to a given stream."""
