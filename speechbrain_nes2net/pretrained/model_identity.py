"""What identifies a model to score: the digest of an export folder or file, its hub id, or its parameters.

A score log is keyed by the model (``nes2net-score`` by its source,
``recipes/evaluate.py`` by the parameters it loaded); the ONNX exporter stamps
the source folder's digest into its file.

Authors
 * speechbrain-nes2net contributors
"""

import hashlib
from pathlib import Path

import torch


def _add_file_content(digest, path):
    """Feeds a file's bytes to ``digest`` in 1 MiB blocks (model weights can be large)."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest


def export_folder_digest(folder):
    """SHA-256 over the names and contents of a model folder's files (symlinks followed).

    The model card (``README.md``) is left out: it does not change the scores.

    Arguments
    ---------
    folder : str or Path
        An exported model folder.

    Returns
    -------
    str
        Hex digest.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "backend.ckpt").write_bytes(b"weights")
    >>> before = export_folder_digest(folder)
    >>> _ = (folder / "README.md").write_text("card")
    >>> export_folder_digest(folder) == before
    True
    >>> _ = (folder / "backend.ckpt").write_bytes(b"other weights")
    >>> export_folder_digest(folder) == before
    False
    """
    digest = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or path.name == "README.md" or path.name.startswith("."):
            continue
        digest.update(path.name.encode() + b"\0")
        _add_file_content(digest, path)
        digest.update(b"\0")
    return digest.hexdigest()


def model_source_fingerprint(model):
    """What identifies a model source: a folder's or a file's content hash, or a hub id.

    Arguments
    ---------
    model : str or Path
        An exported model folder, an ONNX file, or a hub id.

    Returns
    -------
    str
        ``folder:<digest>`` (:func:`export_folder_digest`), ``file:<SHA-256>``
        or ``hub:<id>``.

    Example
    -------
    >>> model_source_fingerprint("speechbrain/some-model-id")
    'hub:speechbrain/some-model-id'
    """
    source = Path(model).expanduser()
    if source.is_dir():
        return "folder:" + export_folder_digest(source)
    if source.is_file():
        return "file:" + _add_file_content(hashlib.sha256(), source).hexdigest()
    return f"hub:{model}"


def parameter_fingerprint(modules):
    """SHA-256 over the names and values of the modules' parameters and buffers.

    Arguments
    ---------
    modules : dict
        Name -> torch module (DDP wrappers are looked through).

    Returns
    -------
    str

    Example
    -------
    >>> a = parameter_fingerprint({"m": torch.nn.Linear(2, 1)})
    >>> len(a)
    64
    """
    digest = hashlib.sha256()
    for name in sorted(modules):
        module = getattr(modules[name], "module", modules[name])
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}.{key}:{tuple(tensor.shape)}:{tensor.dtype}\0".encode())
            data = tensor.detach().cpu().contiguous()
            if data.dtype == torch.bfloat16:
                data = data.float()
            digest.update(data.numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()
