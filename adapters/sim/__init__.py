"""Queue- and latency-aware fill simulation (docs/queue_model.md).

``queue``: pure queue-position maths (lots, ticks); ``latency``: seeded latency draws (ns);
``calibration``: the calibration JSON; ``exec_client``: ``QueueSimExecutionClient``, a Nautilus
execution client that owns our orders and fills them from market data on the message bus.
"""
