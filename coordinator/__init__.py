"""The coordinator: fleet graph, planners, durable job engine, HTTP API and CLI."""
