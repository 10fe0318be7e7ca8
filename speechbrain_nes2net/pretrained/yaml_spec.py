"""How an export's ``hyperparams.yaml`` rebuilds modules, and the YAML it is written in.

:class:`ModuleSpec` is one ``!new:`` / ``!apply:`` entry with plain arguments;
:func:`scalar`, :func:`flow` and :func:`block` write plain data as YAML that
HyperPyYAML reads back to the same values.

Authors
 * speechbrain-nes2net contributors
"""

import importlib
import json
import math
import re
from dataclasses import dataclass, field


class ExportError(ValueError):
    """A model that cannot be exported as asked, with what to change."""


@dataclass(frozen=True)
class ModuleSpec:
    """How ``hyperparams.yaml`` rebuilds a module: ``!new:`` or ``!apply:`` with plain arguments.

    Arguments
    ---------
    target : str
        Dotted path of the class (``!new:``) or factory function (``!apply:``),
        importable from an installed package.
    kwargs : dict
        Keyword arguments (plain YAML data: numbers, strings, booleans, null,
        lists, mappings).
    args : list
        Positional arguments (used instead of ``kwargs`` when given).
    kind : str
        'new' or 'apply'.

    Example
    -------
    >>> spec = ModuleSpec("speechbrain_nes2net.lobes.aggregation.SEA", {"num_layers": 3})
    >>> spec.build()
    SEA(...)
    >>> print(spec.to_yaml("aggregator"))
    aggregator: !new:speechbrain_nes2net.lobes.aggregation.SEA
        num_layers: 3
    """

    target: str
    kwargs: dict = field(default_factory=dict)
    args: list = None
    kind: str = "new"

    def __post_init__(self):
        if self.kind not in ("new", "apply"):
            raise ValueError(f"kind must be 'new' or 'apply', got {self.kind!r}")
        if self.args is not None and self.kwargs:
            raise ValueError("give either positional args or kwargs, not both")

    def resolve(self):
        """Imports the class or function."""
        module_name, _, name = self.target.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError) as err:
            raise ExportError(
                f"{self.target} cannot be imported ({err}); exported modules must come "
                "from an installed package"
            ) from None

    def build(self):
        """Builds the module as hyperpyyaml would."""
        target = self.resolve()
        return target(*self.args) if self.args is not None else target(**self.kwargs)

    def to_yaml(self, key):
        """The YAML entry ``key: !<kind>:<target>`` with its arguments."""
        head = f"{key}: !{self.kind}:{self.target}"
        if self.args is not None:
            return f"{head} {flow(list(self.args))}"
        if not self.kwargs:
            return f"{head} {{}}"
        return "\n".join([head] + block(self.kwargs, 1))

    @classmethod
    def from_yaml_node(cls, node, what):
        """Reads a ``!new:`` / ``!apply:`` node of a round-trip-loaded YAML.

        Arguments
        ---------
        node : ruamel.yaml node
            The tagged mapping or sequence.
        what : str
            Its place in the file, for error messages.

        Returns
        -------
        ModuleSpec
        """
        tag = getattr(getattr(node, "tag", None), "value", None)
        match = re.fullmatch(r"!(new|apply):([\w.]+)", tag or "")
        if not match:
            raise ExportError(
                f"{what} is built with tag {tag!r}; an export can only rebuild modules "
                "declared as '!new:<class>' or '!apply:<function>' with plain arguments"
            )
        kind, target = match.groups()
        if isinstance(node, dict):
            kwargs = {str(key): _plain(value, f"{what}.{key}") for key, value in node.items()}
            return cls(target, kwargs, kind=kind)
        if isinstance(node, list):
            args = [_plain(value, f"{what}[{index}]") for index, value in enumerate(node)]
            return cls(target, {}, args=args, kind=kind)
        raise ExportError(f"{what}: {tag} must take a mapping or a list of arguments")


def _plain(value, what):
    """Turns round-trip YAML data into plain Python, refusing objects.

    An ``!apply:`` argument that computes plain data (``ssl_dim: !apply:
    speechbrain_nes2net.lobes.ssl.ssl_dim [<ssl_source>]``) is computed: the
    export writes its value.
    """
    tag = getattr(getattr(value, "tag", None), "value", None)
    if tag is not None and tag.startswith("!apply:"):
        function = ModuleSpec(tag[len("!apply:"):], kind="apply").resolve()
        if isinstance(value, dict):
            result = function(**_plain(dict(value), what))
        else:
            result = function(*_plain(list(value), what))
        return _plain(result, what)
    if tag is not None:
        raise ExportError(
            f"{what} has an argument built with {tag}; an export needs plain values "
            "(numbers, strings, booleans, null, lists, mappings)"
        )
    if isinstance(value, dict):
        return {str(key): _plain(item, f"{what}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{what}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    raise ExportError(f"{what}: value {value!r} of type {type(value).__name__} is not plain data")


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = {"null", "true", "false", "yes", "no", "on", "off", "y", "n"}


def yaml_key(key):
    """A mapping key as YAML: bare when it reads back as the same string, else quoted.

    Example
    -------
    >>> yaml_key("sample_rate"), yaml_key("null"), yaml_key("0")
    ('sample_rate', '"null"', '"0"')
    """
    key = str(key)
    if _PLAIN_KEY.fullmatch(key) and key.lower() not in _RESERVED:
        return key
    return json.dumps(key)


def scalar(value):
    """A plain scalar (None, bool, int, float, str) as YAML that reads back to the same value.

    Example
    -------
    >>> scalar(None), scalar(True), scalar(1e-07), scalar("a b")
    ('null', 'true', '1.0e-07', '"a b"')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"  # YAML needs the dot to read a float
        return text
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) to YAML")


def flow(value):
    """Plain data (mappings, lists, scalars) in YAML flow style, on one line.

    Example
    -------
    >>> flow({"scale": 2.0, "sizes": [1, 2]})
    '{scale: 2.0, sizes: [1, 2]}'
    """
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_key(k)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(item) for item in value) + "]"
    return scalar(value)


def block(mapping, depth):
    """Block-style lines of a mapping (4-space indents, lists in flow style).

    Example
    -------
    >>> block({"config": {"hidden_size": 64}}, 1)
    ['    config:', '        hidden_size: 64']
    """
    pad = "    " * depth
    lines = []
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{yaml_key(key)}:")
            lines.extend(block(value, depth + 1))
        else:
            lines.append(f"{pad}{yaml_key(key)}: {flow(value)}")
    return lines
