"""mmbot/report/: see docs/architecture.md."""
