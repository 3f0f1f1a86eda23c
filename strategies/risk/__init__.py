"""Risk guards: Nautilus actors beside the strategy, the same in backtest, shadow and live.

See ``docs/risk.md``. Modules: ``base`` (constraint message, guard base class, pure helpers),
``audit`` (hash-chained JSONL), ``supervisor`` (audit writer, RiskEngine trading state, report),
and one module per guard: ``position``, ``loss``, ``drawdown``, ``edge``, ``circuit_breaker``,
``stale_data``, ``kill_switch``, ``portfolio`` (node-wide exposure and PnL).
"""

# (section name in [risk], actor path, config path)
GUARDS: dict[str, tuple[str, str]] = {
    "position": ("strategies.risk.position:PositionGuard", "strategies.risk.position:PositionGuardConfig"),
    "loss": ("strategies.risk.loss:LossGuard", "strategies.risk.loss:LossGuardConfig"),
    "drawdown": ("strategies.risk.drawdown:DrawdownGuard", "strategies.risk.drawdown:DrawdownGuardConfig"),
    "edge": ("strategies.risk.edge:EdgeGuard", "strategies.risk.edge:EdgeGuardConfig"),
    "circuit_breaker": ("strategies.risk.circuit_breaker:CircuitBreakerGuard",
                        "strategies.risk.circuit_breaker:CircuitBreakerConfig"),
    "stale_data": ("strategies.risk.stale_data:StaleDataGuard", "strategies.risk.stale_data:StaleDataConfig"),
    "kill_switch": ("strategies.risk.kill_switch:KillSwitch", "strategies.risk.kill_switch:KillSwitchConfig"),
    "portfolio": ("strategies.risk.portfolio:PortfolioGuard", "strategies.risk.portfolio:PortfolioGuardConfig"),
}
SUPERVISOR = ("strategies.risk.supervisor:RiskSupervisor", "strategies.risk.supervisor:RiskSupervisorConfig")
