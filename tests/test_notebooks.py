"""The notebooks in notebooks/, executed top to bottom on tiny settings as a reader runs them.

Each runs in a Jupyter kernel of this interpreter (a kernel spec written for the test, so a
fresh clone needs nothing registered), in its own directory and MLflow store, with the
``parameters`` cell followed by one that sets tiny values (as papermill injects parameters).
A failing cell fails the test; a last cell added here reports what the notebook made, and the
test checks those numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL_NAME = "xent-tf"  # the notebooks' kernel (make install registers it in .venv)
# A cell may train a study on a loaded machine; the whole notebook is far quicker alone.
CELL_TIMEOUT = 600
REPORT_TAG = "xent-test-report"


def _kernel_manager(tmp_path: Path) -> KernelManager:
    """A kernel manager that starts this interpreter's ipykernel under the notebooks' name."""
    spec_dir = tmp_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "xent-tf (test)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def execute(name: str, parameters: str, report: str, workdir: Path) -> dict[str, object]:
    """Run ``notebooks/<name>`` with ``parameters`` after its parameters cell and ``report``
    (code printing one JSON line) as a last cell, in ``workdir``.

    Returns:
        The JSON the report cell printed.
    """
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    index = next(
        i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])
    )
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(parameters))
    notebook.cells.append(nbformat.v4.new_code_cell(report, metadata={"tags": [REPORT_TAG]}))
    client = NotebookClient(
        notebook,
        km=_kernel_manager(workdir),
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()
    nbformat.write(notebook, workdir / name)  # kept for a look (and the HTML rendering)
    last = notebook.cells[-1]
    text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    return dict(json.loads(text.strip().splitlines()[-1]))


def _outputs(path: Path, mime: str) -> list[str]:
    """Every rich output of type ``mime`` in an executed notebook."""
    notebook = nbformat.read(path, as_version=4)
    return [
        o["data"][mime]
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if mime in o.get("data", {})
    ]


def test_notebooks_are_stored_without_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        assert notebook.metadata.kernelspec.name == KERNEL_NAME, path.name
        assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1, path.name


def test_tutorial_notebook_runs_the_study_and_the_ledger(tmp_path: Path) -> None:
    parameters = (
        "SEEDS = 2\n"
        f"TRACKING_URI = 'sqlite:///{tmp_path / 'mlflow.db'}'\n"
        "EXTRA = ['+debug=tiny', 'hydra.launcher.n_jobs=1']\n"
    )
    report = (
        "import json\n"
        "print(json.dumps({'runs': len(result.runs), 'epochs': len(result.epochs),\n"
        "    'finished': int((result.runs['status'] == 'FINISHED').sum()),\n"
        "    'seeds': sorted(set(result.runs['seed'])),\n"
        "    'claims': sorted(set(result.verdicts['claim'])),\n"
        "    'study_verdict': result.verdicts.query(\"claim == 'C12' and context == 'overall'\")"
        "['verdict'].item(),\n"
        "    'ledger_claims': list(claims.verdicts['claim']),\n"
        "    'ledger_verdict': claims.verdicts['verdict'].item(),\n"
        "    'ledger_study': claims.studies['parent_run_id'].item(),\n"
        "    'parent': result.parent_run_id,\n"
        "    'sigma_prime_10': float(grads['sigma\\'(z)'].iloc[-1]),\n"
        "    'autodiff_gap': float(gap),\n"
        "    'autodiff_ratio_10': float(autodiff['MSE / CE'].iloc[-1])}))\n"
    )
    made = execute("mse_vs_ce.ipynb", parameters, report, tmp_path)
    # 3 losses (ce, mse, the mse_raw control) x 2 output inits x 2 seeds, 2 epochs each
    # (+debug=tiny), all finished.
    assert made["runs"] == 12 and made["finished"] == 12 and made["epochs"] == 24
    assert made["seeds"] == [0, 1]
    assert made["claims"] == ["C12", "C12b", "C12c"]
    # The ledger judged C12 from the study the notebook ran, with the study's own verdict.
    assert made["ledger_claims"] == ["C12"]
    assert made["ledger_study"] == made["parent"]
    assert made["ledger_verdict"] == made["study_verdict"]
    # sigma'(10) = e^-10 / (1 + e^-10)^2; Keras's float32 gradients agree with the formulas
    # to float32 rounding and its 1e-7 epsilon (measured: 4.6e-4 relative, CE at z = 10),
    # and MSE's gradient is 2 sigma'(10) of cross-entropy's there.
    assert made["sigma_prime_10"] == pytest.approx(4.5395807735951673e-05, rel=1e-12)
    assert made["autodiff_gap"] < 1e-3
    assert made["autodiff_ratio_10"] == pytest.approx(2 * 4.5395807735951673e-05, rel=1e-3)
    html = "\n".join(_outputs(tmp_path / "mse_vs_ce.ipynb", "text/html"))
    assert made["parent"] in html and "<h5>Verdicts</h5>" in html
    assert html.count("data:image/png;base64,") == 4  # the study's 4 overlays
    assert len(_outputs(tmp_path / "mse_vs_ce.ipynb", "image/png")) == 2  # two curves cells


def test_bring_your_own_data_notebook_trains_a_csv_with_a_keras_model(tmp_path: Path) -> None:
    parameters = (
        "ROWS = 200\nEPOCHS = 2\nSEEDS = 2\n"
        f"TRACKING_URI = 'sqlite:///{tmp_path / 'mlflow.db'}'\n"
        "EXTRA = ['hydra.launcher.n_jobs=1']\n"
    )
    report = (
        "import json\n"
        "print(json.dumps({'first_epochs': len(first.epochs), 'first_params': first.n_params,\n"
        "    'first_run': first.run_id, 'runs': len(mine.runs),\n"
        "    'finished': int((mine.runs['status'] == 'FINISHED').sum()),\n"
        "    'again': again.parent_run_id, 'mine': mine.parent_run_id,\n"
        "    'same_runs': sorted(again.runs['run_id']) == sorted(mine.runs['run_id']),\n"
        "    'csv_rows': len(pd.read_csv(csv))}))\n"
    )
    made = execute("bring_your_own_data.ipynb", parameters, report, tmp_path)
    assert made["csv_rows"] == 200 and made["first_epochs"] == 2
    # my_models.build: 2 -> 16 -> 16 -> 1 logit: (2*16+16) + (16*16+16) + (16+1) = 337.
    assert made["first_params"] == 337
    assert made["runs"] == 12 and made["finished"] == 12
    assert made["again"] == made["mine"] and made["same_runs"]
    notebook = nbformat.read(tmp_path / "bring_your_own_data.ipynb", as_version=4)
    refusals = "".join(
        o.get("text", "") for c in notebook.cells if "for bad in" in c.source for o in c.outputs
    )
    assert "trainer.epoch" in refusals and "colour" in refusals
