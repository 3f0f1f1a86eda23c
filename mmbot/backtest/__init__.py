"""mmbot/backtest/: see docs/architecture.md."""
