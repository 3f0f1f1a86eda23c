"""mmbot/config/: see docs/architecture.md."""
