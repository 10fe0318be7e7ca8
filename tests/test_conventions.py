"""SpeechBrain's contribution rules, held for this project.

SpeechBrain checks every recipe contribution (``tests/utils`` of its
repository): every module, every class and every public function (nested ones
included; names starting with ``_`` are private and exempt) has a docstring,
and every variable of a recipe YAML is used by the recipe code. Our own
versions of those checks run here, so that the rules stay true.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["speechbrain_nes2net", "data_prep", "recipes"]


def definitions_without_docstring(source, filename="<source>"):
    """(line, name) of the module, classes and public functions of ``source`` without a docstring."""
    tree = ast.parse(source, filename=filename)
    missing = [] if ast.get_docstring(tree) is not None else [(1, "module")]

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                private = child.name.startswith("_") and not isinstance(child, ast.ClassDef)
                if ast.get_docstring(child) is None and not private:
                    missing.append((child.lineno, name))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return missing


def python_files():
    """The Python files of the checked folders."""
    return sorted(path for folder in CHECKED for path in (ROOT / folder).rglob("*.py"))


def test_the_check_finds_nested_definitions_without_docstrings():
    source = '''"""A module."""


def documented():
    """Says what it does."""

    def helper():
        return 1

    return helper


class Thing:
    """A thing."""

    def method(self):
        pass

    def _private(self):
        pass

    @property
    def value(self):
        """Its value."""
        return 1
'''
    assert definitions_without_docstring(source) == [(7, "documented.helper"), (16, "Thing.method")]
    assert definitions_without_docstring("x = 1\n") == [(1, "module")]


def test_every_function_and_class_has_a_docstring():
    files = python_files()
    assert len(files) > 40
    missing = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in files
        for line, name in definitions_without_docstring(path.read_text(encoding="utf-8"), str(path))
    ]
    assert not missing, "definitions without a docstring:\n" + "\n".join(missing)



#: A definition as SpeechBrain's line reader sees one: ``def``/``class`` and its colon on one line.
ONE_LINE_DEF = re.compile(r"^def\s(.*)\(.*\):")
ONE_LINE_CLASS = re.compile(r"^class\s(.*):")


def line_reader_misses(source):
    """(line, name) that SpeechBrain's own docstring checker (``tests/utils/check_docstrings.py``) rejects.

    That checker reads a file line by line, stripped, and passes over blank
    lines, comments and every line holding ``>>>`` or ``...``; after a line
    that opens a public function or a class on one line, the next line it
    reads must open a string. So a docstring whose first line holds an
    ellipsis reads as missing. The module's first line read must be a string
    too. :func:`definitions_without_docstring` is the rule by meaning; this
    is the rule as SpeechBrain's CI applies it.
    """
    missing, expecting = [], (1, "module")
    for number, raw in enumerate(source.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or ">>>" in line or "..." in line:
            continue
        if expecting is not None:
            if not (line.startswith('"') or line.startswith('r"')):
                missing.append(expecting)
            expecting = None
            continue
        function, klass = ONE_LINE_DEF.match(line), ONE_LINE_CLASS.match(line)
        if function and not function.group(1).startswith("_"):
            expecting = (number, function.group(1))
        elif klass:
            expecting = (number, klass.group(1))
    return missing


def test_the_line_reader_check_rejects_an_ellipsis_on_a_docstrings_first_line():
    source = '''"""A module."""


def score(x):
    """Scores x... quickly.

    More.
    """


def ok(x):
    """Fine."""


class Thing:
    r"""Raw docstring."""
'''
    assert line_reader_misses(source) == [(4, "score")]
    assert line_reader_misses("import os\n") == [(1, "module")]


def test_speechbrains_line_reader_finds_every_docstring():
    files = [path for path in python_files() if "__" not in str(path.relative_to(ROOT))]
    missing = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in files
        for line, name in line_reader_misses(path.read_text(encoding="utf-8"))
    ]
    assert not missing, (
        "SpeechBrain's docstring checker reads these as missing (a first docstring line "
        "with '...' or '>>>' is skipped by it; reword that line):\n" + "\n".join(missing)
    )

# ------------------------------------------------------------- YAML variables

#: The code a recipe YAML is read by: the scripts and the modules they hand hparams to.
RECIPE_CODE = [
    "recipes/train.py",
    "recipes/train_localization.py",
    "recipes/evaluate.py",
    "speechbrain_nes2net/training/brain.py",
    "speechbrain_nes2net/training/config.py",
    "speechbrain_nes2net/training/recipe.py",
    "speechbrain_nes2net/training/dataio.py",
    "speechbrain_nes2net/training/feature_cache.py",
    "speechbrain_nes2net/pretrained/export.py",
]


def top_level_keys(text):
    """The top-level keys of a YAML file (lines ``key:`` at column 0)."""
    return [match.group(1) for match in re.finditer(r"^([A-Za-z_]\w*)\s*:", text, re.M)]


def unused_yaml_keys(yaml_text, code_text):
    """Top-level YAML keys that neither the YAML (``<key>``) nor the code mentions.

    SpeechBrain's run options (``max_grad_norm``, ``precision``, ...) are read
    from the YAML by ``Brain`` itself and count as used.
    """
    from speechbrain.utils.run_opts import RunOptions

    run_options = set(RunOptions().as_dict())
    unused = []
    for key in top_level_keys(yaml_text):
        if key.startswith("__") or key in run_options:  # __set_seed: a side effect
            continue
        referenced = f"<{key}>" in yaml_text or re.search(rf"<{re.escape(key)}[\[.]", yaml_text)
        if not referenced and not re.search(rf"\b{re.escape(key)}\b", code_text):
            unused.append(key)
    return unused


def test_the_yaml_check_finds_an_unused_key():
    yaml_text = "lr: 0.1\nbatch: 4\nopt: !name:torch.optim.Adam\n    lr: !ref <lr>\nstray: 3\n"
    assert unused_yaml_keys(yaml_text, 'hparams["opt"]; hparams["batch"]') == ["stray"]


@pytest.mark.parametrize("yaml_path", sorted((ROOT / "hparams").glob("*.yaml")), ids=lambda p: p.name)
def test_every_yaml_variable_is_used(yaml_path):
    code = "\n".join((ROOT / path).read_text(encoding="utf-8") for path in RECIPE_CODE)
    unused = unused_yaml_keys(yaml_path.read_text(encoding="utf-8"), code)
    assert not unused, f"{yaml_path.name}: variables no code or !ref uses: {unused}"


#: How the recipe code reads a setting: hparams["key"], self.hparams.key, brain.hparams.key.
READ_KEY = re.compile(r'hparams\["([a-z_]+)"\]|\bhparams\.([a-z_]+)\b')
#: Settings only localisation YAMLs have (read by the localisation recipe and its data).
LOCALIZATION_KEYS = {"segment_loss", "utterance_loss_weight", "segment_loss_weight", "localization_shift"}


def test_every_setting_the_recipe_reads_is_in_every_yaml():
    # The YAML is the one source of defaults: code reads a setting without a default,
    # so every shipped YAML must define each setting its recipe reads.
    code = "\n".join((ROOT / path).read_text(encoding="utf-8") for path in RECIPE_CODE)
    read = {a or b for a, b in READ_KEY.findall(code)} - {"get", "update", "items", "keys"}
    missing = {}
    for yaml_path in sorted((ROOT / "hparams").glob("*.yaml")):
        keys = set(top_level_keys(yaml_path.read_text(encoding="utf-8")))
        wanted = read if "localization" in yaml_path.name else read - LOCALIZATION_KEYS
        if wanted - keys:
            missing[yaml_path.name] = sorted(wanted - keys)
    assert not missing, f"settings the recipe reads but the YAML lacks: {missing}"

# ------------------------------------------------------- SpeechBrain's public API


def brain_subclasses():
    """Every ``sb.Brain`` subclass defined in the project's library and recipes."""
    import importlib
    import inspect
    import runpy

    import speechbrain as sb

    found = {}
    for path in python_files():
        relative = path.relative_to(ROOT)
        if relative.parts[0] == "recipes":
            namespace = runpy.run_path(str(path), run_name="not_main")
        else:
            module = importlib.import_module(".".join(relative.with_suffix("").parts))
            namespace = vars(module)
        for value in namespace.values():
            if inspect.isclass(value) and issubclass(value, sb.Brain) and value is not sb.Brain:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def test_no_brain_overrides_a_private_speechbrain_method():
    # Methods of sb.Brain whose names start with "_" change without notice between
    # SpeechBrain releases: the recipes use public hooks only.
    import speechbrain as sb

    private = {name for name in dir(sb.Brain) if name.startswith("_") and not name.startswith("__")}
    brains = brain_subclasses()
    assert brains, "no Brain subclass found"
    overrides = {
        f"{name}.{method}"
        for name, brain in brains.items()
        for klass in brain.__mro__
        if klass.__module__.startswith(("speechbrain_nes2net", "not_main", "__main__"))
        or klass.__module__ in ("train", "evaluate")
        for method in vars(klass)
        if method in private
    }
    assert not overrides, f"private SpeechBrain methods overridden: {sorted(overrides)}"
