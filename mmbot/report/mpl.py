"""Static matplotlib figures as base64 PNG data URIs (the wf report, the soak report): the Agg
canvas, no display, no network. report.html's plots are interactive (mmbot/report/plots.py)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _png(fig: Figure) -> str:
    """Figure rendered with the Agg canvas as a base64 PNG data URI."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _dt(ts_ns: np.ndarray | pd.Series) -> np.ndarray:
    return np.asarray(ts_ns, dtype=np.int64).astype("datetime64[ns]")


def _time_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    loc = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    ax.set_xlabel("time (UTC)")


def _style(ax: Any) -> None:
    ax.grid(True, alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _legend_above(ax: Any) -> None:
    # Above the axes so it never hides data (PnL paths usually start in the top-left corner).
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=6, frameon=False)
