"""Soak: hours of ``mmbot live`` against the loopback exchange at real-time rate (issue 17).

``python -m tools.soak --duration 1h [--faults SCHEDULE] [--symbols 1] [--mode live|shadow] [--out DIR]``

- ``run``: the exchange (``tools.fake_bybit --seamless``), the node, faults on schedule, samples,
  the stop, the checks.
- ``schedule``: the ``--faults`` syntax and what each fault does to the exchange.
- ``probes``: /proc, Prometheus text, the recorder's files.
- ``timeline``: order state and position, node vs exchange, over the whole run.
- ``recorder_check``: ``mmbot catalog import --strict`` of the recording vs what was broadcast.
- ``gates``: each gate and its bound (with the reason); ``report``: json, md, html, png.

How to read a report: docs/runbook.md, "Soak". Last 1-hour result: docs/benchmarks.md.
"""
