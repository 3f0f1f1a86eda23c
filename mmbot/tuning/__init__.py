"""Walk-forward tuning (``mmbot wf``): rolling train/test splits over a catalog, an Optuna
search per split judged in-sample, champions judged only out-of-sample, gates, reports.

Modules: ``config`` (the ``[wf]`` section), ``splits``, ``space``, ``objective``, ``gates``,
``worker`` (one backtest per task, run in a process pool or on Ray), ``runner`` (studies,
scheduling, resume), ``report`` (report.json, champion.json, REPORT.md, report.html).
See docs/tuning.md.
"""
