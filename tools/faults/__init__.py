"""The fault matrix: ``mmbot live --env testnet`` against the loopback Bybit (tools/fake_bybit) for
every fault the fake supports, during a session, just before the stop signal and at the stop's own
cancel-all, plus SIGKILL with resting orders and a restart. See ``tools.faults.matrix`` and
docs/runbook.md "Fault matrix".

    python -m tools.faults [--only KIND,...] [--json OUT] [--jobs N]
"""
