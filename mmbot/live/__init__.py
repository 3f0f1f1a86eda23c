"""mmbot/live/: see docs/architecture.md."""
