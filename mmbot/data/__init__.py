"""Data acquisition: downloading public market data (``mmbot data fetch``, docs/fetch.md)."""
