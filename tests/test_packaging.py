"""Packaging: setup.py installs the library only; data_prep and the recipes run from the checkout.

A top-level ``data_prep`` package in site-packages would collide with any
other project that installs one, so the corpus scripts stay in the
repository: the library must not need them, and the scripts that import them
(the recipes, whose YAMLs name ``data_prep.<corpus>_prepare`` functions, and
the corpus scripts themselves) put the repository root on ``sys.path``.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = "speechbrain_nes2net"
#: The command lines that import data_prep: the recipes that load a YAML, and the corpus scripts.
SCRIPTS = [ROOT / "recipes" / name for name in ("train.py", "evaluate.py", "export.py")] + [
    path
    for path in sorted((ROOT / "data_prep").glob("*.py"))
    if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")
]


def setup_packages():
    """The packages setup.py installs: its ``find_packages(...)`` call, run on the checkout."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "find_packages"
    ]
    assert len(calls) == 1, "setup.py should list its packages with one find_packages call"
    options = {keyword.arg: ast.literal_eval(keyword.value) for keyword in calls[0].keywords}
    assert not calls[0].args and "where" not in options, "setup.py searches its own folder"
    return setuptools.find_packages(where=str(ROOT), **options)


def test_setup_installs_the_whole_library_and_no_other_top_level_package():
    packages = setup_packages()
    assert {name.split(".")[0] for name in packages} == {LIBRARY}, packages
    # Every library folder with code is a package that find_packages picks up.
    folders = {path.parent for path in (ROOT / LIBRARY).rglob("*.py")}
    expected = {".".join(folder.relative_to(ROOT).parts) for folder in folders}
    assert expected <= set(packages), sorted(expected - set(packages))


def data_prep_imports(source, filename):
    """(line, module) of every import of ``data_prep`` in ``source``, ``importlib`` calls included."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""] if node.level == 0 else []
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = getattr(node.func, "attr", getattr(node.func, "id", ""))
            modules = [node.args[0].value] if called in ("import_module", "__import__") else []
        else:
            continue
        found += [
            (node.lineno, module)
            for module in modules
            if isinstance(module, str) and module.split(".")[0] == "data_prep"
        ]
    return found


def test_the_import_check_finds_every_form():
    source = (
        "import data_prep.common\nfrom data_prep import x\nfrom .data_prep import y\n"
        "import importlib\nimportlib.import_module('data_prep.ctrsvdd_prepare')\n"
        "from data_preparation import z\n"
    )
    assert data_prep_imports(source, "<test>") == [
        (1, "data_prep.common"), (2, "data_prep"), (5, "data_prep.ctrsvdd_prepare"),
    ]  # fmt: skip


def test_the_library_imports_nothing_from_data_prep():
    found = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted((ROOT / LIBRARY).rglob("*.py"))
        for line, module in data_prep_imports(path.read_text(encoding="utf-8"), str(path))
    ]
    assert not found, "the installed library cannot import data_prep:\n" + "\n".join(found)


# Runs each script (not as __main__: no command line) and reports where data_prep comes from.
FIND_DATA_PREP = """
import importlib.util, json, runpy, sys
origins = {}
for script in sys.argv[1:]:
    saved = list(sys.path)
    runpy.run_path(script, run_name="packaging_check")
    origins[script] = importlib.util.find_spec("data_prep").origin
    sys.path[:] = saved
    for name in [name for name in sys.modules if name.split(".")[0] == "data_prep"]:
        del sys.modules[name]
print(json.dumps(origins))
"""


def environment_without_the_checkout():
    """This process's environment, less a PYTHONPATH entry naming the checkout."""
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    kept = [path for path in paths if path and Path(path).resolve() != ROOT]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(kept), HF_HUB_OFFLINE="1")


def test_every_script_imports_data_prep_from_its_checkout_in_any_working_directory(tmp_path):
    # From another directory, with the checkout on no path a user set: each
    # script must find data_prep itself, in its own checkout (not an installed one).
    result = subprocess.run(
        [sys.executable, "-c", FIND_DATA_PREP, *map(str, SCRIPTS)],
        cwd=tmp_path, env=environment_without_the_checkout(),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    origins = json.loads(result.stdout.strip().splitlines()[-1])
    expected = str(ROOT / "data_prep" / "__init__.py")
    by_script = {Path(script).relative_to(ROOT).as_posix(): origin for script, origin in origins.items()}
    assert len(by_script) == len(SCRIPTS) > 8
    assert all(origin == expected for origin in by_script.values()), by_script


def test_a_corpus_script_runs_by_its_path_from_another_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "data_prep" / "ctrsvdd_prepare.py"), "--help"],
        cwd=tmp_path, env=environment_without_the_checkout(),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: python data_prep/ctrsvdd_prepare.py")
