"""Build hook: ship the default configs and the embedded catalog inside the wheel.

Everything else is declared in pyproject.toml. In a source checkout mmbot finds ``config/`` and
``catalog/`` beside the package (mmbot/paths.py); an installed wheel has no repository root, so
``build_py`` copies both into the built package as ``mmbot/_bundled/{config,catalog}``, keeping
their relative layout (``config/backtest.toml`` names ``../catalog``). Editable installs skip
the copy: they read the checkout itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = {  # source folder -> which files to ship
    "config": ("*.toml", "*.json"),
    "catalog": ("mmbot_catalog.json", "data/**/*.parquet"),
    "catalog-portfolio": ("mmbot_catalog.json", "data/**/*.parquet"),
}


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "mmbot" / "_bundled"
        shutil.rmtree(target, ignore_errors=True)
        for folder, patterns in BUNDLED.items():
            for pattern in patterns:
                for src in sorted((ROOT / folder).glob(pattern)):
                    if src.is_file():
                        dst = target / folder / src.relative_to(ROOT / folder)
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildPyWithData})
