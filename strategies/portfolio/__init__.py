"""Node-wide portfolio actors: the scoreboard and the allocator (docs/portfolio.md, "Scoreboard and
allocator"). No strategy imports them: the scoreboard answers the allocator on a message-bus
endpoint, and the allocator's budgets reach each strategy as ``RiskConstraint`` messages on the
risk topic (a position cap, like the guards' side constraints)."""

SCOREBOARD_PATH = ("strategies.portfolio.scoreboard:ScoreboardActor", "strategies.portfolio.scoreboard:ScoreboardConfig")
ALLOCATOR_PATH = ("strategies.portfolio.allocator:AllocatorActor", "strategies.portfolio.allocator:AllocatorConfig")
