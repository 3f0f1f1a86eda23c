"""Where the repository's embedded data and configs live (the package is installed editable)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOG = REPO_ROOT / "catalog"
CONFIG_DIR = REPO_ROOT / "config"
DEFAULT_BACKTEST_CONFIG = CONFIG_DIR / "backtest.toml"
