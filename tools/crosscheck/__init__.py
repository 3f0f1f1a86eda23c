"""Cross-check mmbot's queue simulator against hftbacktest (docs/crosscheck.md)."""
