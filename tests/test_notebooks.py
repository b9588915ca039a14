"""The tutorial notebooks run top to bottom, use only eqrnn's public API, and are
stored without outputs.

The notebooks assert their own results, so a wrong number fails here as well as an
exception does. Each runs in a Jupyter kernel of this interpreter (`sys.executable`,
through a kernel spec written for the test; the `python3` spec on the system may
point at another Python), with matplotlib's Agg backend and the notebooks folder as
working directory. The kernel is a separate process: this suite's jaxtyping hook and
warnings-as-errors do not apply inside it.

The executed copies, outputs included, are written to `$EQRNN_NOTEBOOK_OUTPUT_DIR`
if it is set (e.g. for the documentation site), else to the test's `tmp_path`; the
stored notebooks are never overwritten. `$EQRNN_NOTEBOOK_TIMEOUT` sets the limit per
notebook in seconds (default 300).
"""

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError


NOTEBOOKS_DIR = Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
KERNEL_NAME = "eqrnn-notebooks"
TIMEOUT = float(os.environ.get("EQRNN_NOTEBOOK_TIMEOUT", "300"))


def _kernel_manager(spec_root: Path) -> AsyncKernelManager:
    """A kernel manager whose kernel is `sys.executable -m ipykernel_launcher`."""
    spec_dir = spec_root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "eqrnn notebooks (test interpreter)",
        "language": "python",
        "env": {"MPLBACKEND": "Agg", "JUPYTER_PLATFORM_DIRS": "1"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_root / "kernels")])
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def _output_dir(tmp_path: Path) -> Path:
    chosen = os.environ.get("EQRNN_NOTEBOOK_OUTPUT_DIR")
    out = Path(chosen) if chosen else tmp_path / "executed"
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4, f"expected the tutorial notebooks in {NOTEBOOKS_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    stale = [
        index
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count)
    ]
    assert not stale, (
        f"{path.name}: cells {stale} hold outputs or execution counts; clear them "
        "before committing (the test run regenerates them)."
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_uses_only_the_public_api(path):
    # A reader can run every line in their own project: no `eqrnn._private` module.
    nb = nbformat.read(path, as_version=4)
    private = [
        (index, line)
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for line in cell.source.splitlines()
        if re.search(r"\beqrnn\._", line)
    ]
    assert not private, f"{path.name}: cells import private modules: {private}"


def test_notebook_index_lists_every_notebook():
    index = (NOTEBOOKS_DIR / "README.md").read_text()
    missing = [p.name for p in NOTEBOOKS if p.name not in index]
    assert not missing, f"notebooks/README.md does not link {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=None,  # per cell: none, the whole notebook is limited below
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    out_path = _output_dir(tmp_path) / path.name
    start = time.perf_counter()
    failure = None
    try:
        # `cleanup_kc`: nbclient shuts down only kernels it made itself, and this
        # one comes from `_kernel_manager`.
        run = client.async_execute(cleanup_kc=True)
        asyncio.run(asyncio.wait_for(run, TIMEOUT))
    except CellExecutionError as error:
        failure = f"{path.name} failed:\n{error}"
    except (TimeoutError, DeadKernelError) as error:
        # Cancelling the run at the time limit shuts the kernel down, which nbclient
        # may report as a dead kernel rather than as the timeout.
        if time.perf_counter() - start >= TIMEOUT:
            failure = f"{path.name} ran past {TIMEOUT:.0f} s ($EQRNN_NOTEBOOK_TIMEOUT)."
        else:
            failure = f"{path.name}: the kernel died ({error!r}); out of memory?"
    finally:
        # Also when it failed: the executed part shows where and what came out.
        nbformat.write(nb, out_path)
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s, executed copy at {out_path}")
    if failure is not None:
        pytest.fail(failure, pytrace=False)
