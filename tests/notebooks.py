"""Executing the committed notebooks with nbclient in this venv's kernel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbclient
import nbformat

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


def execute_notebook(name: str, env: dict[str, str]) -> nbformat.NotebookNode:
    """Runs ``notebooks/<name>`` with ``env`` set; returns the executed notebook.

    The first injected cell prints ``sys.prefix`` so callers can prove the kernel is this venv.
    """
    saved = {k: os.environ.get(k) for k in [*env, "PYTHONPATH", "MPLBACKEND"]}
    os.environ.update(env)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), saved["PYTHONPATH"]]))
    os.environ.pop("MPLBACKEND", None)  # let ipykernel choose its inline backend
    try:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
        nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert nb.cells[0].outputs[0]["text"].strip() == sys.prefix, "kernel is not this venv"
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def n_images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
