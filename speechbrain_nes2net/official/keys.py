"""Renaming of official checkpoint keys, and the errors that list the keys that do not fit.

Every importer in :mod:`speechbrain_nes2net.official` describes its key
correspondences as a rule table: ``(official, ours)`` pairs of key templates in
which ``{name}`` placeholders (:data:`PLACEHOLDERS`) stand for the parts that
vary, such as a layer index. A template compiles to an anchored regular
expression; a key is renamed by the first rule whose template it matches, in
either direction. Problems are reported by one error class,
:class:`OfficialWeightsError`, whose message lists the offending keys by
:func:`preview_keys`.

Example
-------
>>> rules = [("layers.{i}.fc1.{p}", "blocks.{i}.dense.{p}"), ("bn.{rest}", "norm.{rest}")]
>>> rename("layers.3.fc1.bias", rules)
'blocks.3.dense.bias'
>>> rename("norm.running_mean", rules, reverse=True)
'bn.running_mean'
>>> rename("layers.3.fc2.bias", rules) is None
True

Authors
 * speechbrain-nes2net contributors
"""

import functools
import re

__all__ = [
    "PLACEHOLDERS",
    "OfficialWeightsError",
    "compile_template",
    "preview_keys",
    "raise_key_problems",
    "rename",
    "rename_keys",
]

#: Placeholders of the key templates and the regular expressions they match.
PLACEHOLDERS = {
    "i": r"\d+",  # an index (layer, block)
    "j": r"\d+",  # a second index within {i}
    "p": r"weight|bias",
    "proj": r"q|k|v|out",  # the attention projections
    "rest": r".+",  # the rest of the key (parameter or buffer name)
}


class OfficialWeightsError(ValueError):
    """Official weights or configuration that do not fit the module they should fill.

    Raised for keys that no rule renames, keys missing from or unexpected in
    the checkpoint, misshapen tensors, and official configurations our modules
    cannot represent. A :class:`ValueError`.

    Example
    -------
    >>> raise OfficialWeightsError("WavLM_SEA aggregator: ...")
    Traceback (most recent call last):
    ...
    speechbrain_nes2net.official.keys.OfficialWeightsError: WavLM_SEA aggregator: ...
    """


@functools.cache
def compile_template(template):
    """Compiles a key template into an anchored regular expression.

    Arguments
    ---------
    template : str
        A key in which ``{name}`` stands for a part matched by
        ``PLACEHOLDERS[name]``; each placeholder at most once.

    Returns
    -------
    re.Pattern
        With a named group per placeholder, to be used with ``fullmatch``.

    Example
    -------
    >>> compile_template("convs.{j}.{p}").fullmatch("convs.12.bias").groupdict()
    {'j': '12', 'p': 'bias'}
    """
    parts = re.split(r"\{(\w+)\}", template)
    unknown = set(parts[1::2]) - set(PLACEHOLDERS)
    if unknown:
        raise ValueError(
            f"key template {template!r} uses unknown placeholders {sorted(unknown)}; "
            f"known: {sorted(PLACEHOLDERS)}"
        )
    return re.compile(
        "".join(
            f"(?P<{part}>{PLACEHOLDERS[part]})" if index % 2 else re.escape(part)
            for index, part in enumerate(parts)
        )
    )


def rename(key, rules, reverse=False):
    """Renames a key by the first rule that matches it.

    Arguments
    ---------
    key : str
        The key to rename.
    rules : iterable of (str, str)
        ``(official, ours)`` template pairs, tried in order.
    reverse : bool
        Rename our key to the official one instead.

    Returns
    -------
    str or None
        The new key, or None when no rule matches.

    Example
    -------
    >>> rename("weight_hidd", [("weight_hidd", "layer_weights")])
    'layer_weights'
    """
    for official, ours in rules:
        source, target = (ours, official) if reverse else (official, ours)
        match = compile_template(source).fullmatch(key)
        if match:
            return target.format(**match.groupdict())
    return None


def rename_keys(state_dict, rules, what, reverse=False):
    """Renames every key of a state dict, or lists those no rule renames.

    Arguments
    ---------
    state_dict : dict
        Weights under the names to rename.
    rules : iterable of (str, str)
        ``(official, ours)`` template pairs (see :func:`rename`).
    what : str
        What the weights are, to start the error message.
    reverse : bool
        Rename our keys to official ones instead.

    Returns
    -------
    dict
        The same values under the new keys, in the same order.

    Raises
    ------
    OfficialWeightsError
        Listing the keys that no rule renames.

    Example
    -------
    >>> rules = [("W", "feature_proj")]
    >>> rename_keys({"W": 1}, rules, "AttM")
    {'feature_proj': 1}
    >>> rename_keys({"W": 1, "W9": 2}, rules, "AttM")
    Traceback (most recent call last):
    ...
    speechbrain_nes2net.official.keys.OfficialWeightsError: AttM:
    official keys with no counterpart (1):
      W9
    """
    renamed, unmatched = {}, []
    for key, value in state_dict.items():
        name = rename(key, rules, reverse=reverse)
        if name is None:
            unmatched.append(key)
        else:
            renamed[name] = value
    title = "keys with no official counterpart" if reverse else "official keys with no counterpart"
    raise_key_problems(what, [(title, unmatched)])
    return renamed


def preview_keys(title, keys, limit=20):
    """Lists keys under a title with their count, the first ``limit`` of them only.

    Arguments
    ---------
    title : str
        What the keys are.
    keys : sequence of str
        The keys (or lines about keys) to list.
    limit : int
        How many to show.

    Returns
    -------
    str
        ``title (count):`` then one indented key a line, and ``... and M more``
        when some are left out.

    Example
    -------
    >>> print(preview_keys("missing keys", ["a", "b", "c"], limit=2))
    missing keys (3):
      a
      b
      ... and 1 more
    """
    keys = list(keys)
    shown = "".join(f"\n  {key}" for key in keys[:limit])
    more = f"\n  ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{title} ({len(keys)}):{shown}{more}"


def raise_key_problems(what, problems):
    """Raises one error listing every non-empty group of problem keys; else returns.

    Arguments
    ---------
    what : str
        The first line of the message: what does not fit.
    problems : iterable of (str, sequence of str)
        ``(title, keys)`` groups, such as missing and unexpected keys; each
        non-empty group is listed by :func:`preview_keys`.

    Raises
    ------
    OfficialWeightsError
        When any group is non-empty.

    Example
    -------
    >>> raise_key_problems("SEA aggregator", [("missing keys", []), ("unexpected keys", [])])
    >>> raise_key_problems("SEA aggregator", [("missing keys", ["excitation.0.weight"])])
    Traceback (most recent call last):
    ...
    speechbrain_nes2net.official.keys.OfficialWeightsError: SEA aggregator:
    missing keys (1):
      excitation.0.weight
    """
    listed = [preview_keys(title, keys) for title, keys in problems if keys]
    if listed:
        raise OfficialWeightsError(f"{what}:\n" + "\n".join(listed))
