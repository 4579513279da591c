"""The layering rules as checks: the import contracts, the launching process without TensorFlow,
and DESIGN.md's module map against the tree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from xent_tf.claims.studies import STUDIES
from xent_tf.track.identity import STUDY_VARIANT_KEYS

REPO = Path(__file__).resolve().parent.parent
# The contracts of pyproject.toml's [tool.importlinter], by name.
CONTRACTS = (
    "Packages by layer: each imports only the layers below it (no cycles between packages)",
    "No import cycles between the modules of a package, nor between packages",
    "Only xent_tf.track imports mlflow",
    "Only xent_tf.report imports matplotlib",
    "No TensorFlow in the launching process's modules",
)


def test_every_import_contract_is_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = " ".join(out.stdout.split())  # the report wraps long contract names
    for name in CONTRACTS:
        assert f"{name} KEPT" in text, out.stdout
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in text


def test_the_launching_process_modules_import_no_tensorflow() -> None:
    """Every module of the launching process, imported in a fresh process, with the entry
    point's own imports (experiments/run.py), leaves TensorFlow and Keras unimported."""
    modules = sorted(
        ".".join(path.relative_to(REPO).with_suffix("").parts)
        for root in ("xent_tf/launch", "hydra_plugins/xent_tf_launcher")
        for path in (REPO / root).glob("*.py")
    )
    code = (
        "import importlib, sys\n"
        "sys.path.insert(0, 'experiments')\n"
        f"for name in {modules!r} + ['run']:\n"
        "    importlib.import_module(name.removesuffix('.__init__'))\n"
        "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "xent_tf.launch.replica_sweep" in modules
    assert "hydra_plugins.xent_tf_launcher.replica_launcher" in modules
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _module_map() -> set[str]:
    """The modules DESIGN.md's module map lists, as paths under xent_tf/."""
    design = (REPO / "docs" / "DESIGN.md").read_text()
    block = design.split("## Layout: the module map", 1)[1].split("```")[1]
    listed, package = set(), None
    for line in block.splitlines():
        if re.match(r"^\S", line):  # a top-level entry (configs/, xent_tf/, tests/ ...)
            package = None
            continue
        top = re.match(r"^  (\w+)(/|\.py)\s", line + " ")
        if top and top.group(2) == "/":
            package = top.group(1)
        elif top:
            listed.add(f"{top.group(1)}.py")
            package = None
        inner = re.match(r"^    (\w+\.py)\s", line + " ")
        if inner:
            assert package is not None, f"a module outside a package: {line!r}"
            listed.add(f"{package}/{inner.group(1)}")
    return listed


def test_design_md_module_map_lists_every_module_of_the_tree_and_no_other() -> None:
    tree = {
        path.relative_to(REPO / "xent_tf").as_posix()
        for path in (REPO / "xent_tf").rglob("*.py")
        if path.name != "__init__.py"
    }
    listed = _module_map()
    assert sorted(listed - tree) == [], "listed in DESIGN.md but not in the tree"
    assert sorted(tree - listed) == [], "in the tree but not in DESIGN.md's module map"
    assert {"config.py", "train/pipeline.py", "claims/studies.py"} <= listed


def test_every_package_says_what_it_owns_and_may_import() -> None:
    for init in sorted((REPO / "xent_tf").glob("*/__init__.py")):
        text = init.read_text()
        assert text.startswith('"""'), init
        assert "import" in text.split('"""')[1], f"{init}: say what the package may import"


def test_the_studies_variant_keys_are_the_studies_group_by() -> None:
    assert list(STUDY_VARIANT_KEYS) == list(STUDIES)
    assert all(STUDIES[name].group_by == keys for name, keys in STUDY_VARIANT_KEYS.items())
