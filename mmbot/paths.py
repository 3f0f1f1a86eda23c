"""Where mmbot's shipped data and configs live, and where user data goes.

Two layouts, one answer:
- a source checkout (``make setup``, ``pip install -e .``): ``config/`` and ``catalog/`` beside
  the ``mmbot`` package, in the repository root;
- an installed wheel (``pip install .``): the build copies them into the package as
  ``mmbot/_bundled/{config,catalog}`` (setup.py), because site-packages has no repository root.

User data (downloads, catalogs built by ``mmbot catalog import`` / ``mmbot data fetch``) never
goes into the shipped catalog: it goes to ``$MMBOT_DATA_DIR`` if set, else
``$XDG_DATA_HOME/mmbot``, else ``~/.local/share/mmbot``.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent  # the repository root in a source checkout (site-packages when installed)
BUNDLED_DIR = PACKAGE_DIR / "_bundled"  # present only in an installed wheel
SHARE_ROOT = BUNDLED_DIR if BUNDLED_DIR.is_dir() else REPO_ROOT
DEFAULT_CATALOG = SHARE_ROOT / "catalog"  # the embedded (shipped) catalog: read it, never import into it
# the embedded portfolio catalog: every instrument on one clock (config/portfolio.toml, docs/portfolio.md)
PORTFOLIO_CATALOG = SHARE_ROOT / "catalog-portfolio"
CONFIG_DIR = SHARE_ROOT / "config"
DEFAULT_BACKTEST_CONFIG = CONFIG_DIR / "backtest.toml"

DATA_DIR_ENV = "MMBOT_DATA_DIR"
USER_DATA_HELP = "$MMBOT_DATA_DIR, else $XDG_DATA_HOME/mmbot, else ~/.local/share/mmbot"


def user_data_dir() -> Path:
    """The user's mmbot data folder (read from the environment at call time)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "mmbot"


def user_catalog_dir() -> Path:
    """Default target of ``mmbot catalog import`` and ``mmbot data fetch --import``."""
    return user_data_dir() / "catalog"


def user_downloads_dir() -> Path:
    """Default folder of ``mmbot data fetch`` downloads (``<dir>/<SYMBOL>/<Bybit file name>``)."""
    return user_data_dir() / "downloads" / "bybit"
