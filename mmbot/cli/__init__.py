"""mmbot/cli/: see docs/architecture.md."""
