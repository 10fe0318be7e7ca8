"""Data pipelines: manifests into SpeechBrain datasets of waveforms and labels.

Training crops (or repeat-pads) every utterance to a fixed number of samples,
optionally at a random offset, and may augment it per utterance (RawBoost);
evaluation reads the full utterance, or a fixed length taken from its start
(the "first 4 s" protocols), and batches utterances sorted by duration so that
padding stays small. Audio is read through :func:`speechbrain_nes2net.audio.load_audio`.

Authors
 * speechbrain-nes2net contributors
"""

import logging

import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset

from speechbrain_nes2net.audio import (
    DEFAULT_SAMPLE_RATE,
    AudioError,
    fixed_length,
    load_audio,
)
from speechbrain_nes2net.manifest import read_manifest
from speechbrain_nes2net.scores import LABEL_IDS

logger = logging.getLogger(__name__)



#: Length of the silent stand-in for an unusable file (see :func:`audio_pipeline`).
PLACEHOLDER_SAMPLES = 16000


def audio_pipeline(
    num_samples=None,
    random_crop=False,
    min_samples=0,
    augment=None,
    sample_rate=DEFAULT_SAMPLE_RATE,
):
    """Builds the dynamic item that turns a manifest ``wav`` path into ``sig``.

    A file that cannot be used (missing, corrupt, empty, NaN samples: see
    :func:`speechbrain_nes2net.audio.load_audio`) does not stop the data
    loader: its ``sig`` is silence and ``audio_error`` says what is wrong (the
    empty string for a good file), so the ``Brain`` can leave it out of the
    loss and the scores and report it, while every process still runs the same
    batches (DDP).

    Arguments
    ---------
    num_samples : int, optional
        Fixed output length (crop / repeat-pad); the full utterance when None.
    random_crop : bool
        Crop at a random offset (training) instead of from the start.
    min_samples : int
        Full utterances shorter than this are repeat-padded to it, so that
        even a very short file yields a few SSL frames.
    augment : callable, optional
        Per-utterance augmentation of the (samples,) waveform, e.g.
        :class:`speechbrain_nes2net.training.rawboost.RawBoost`, applied to the whole
        utterance before cropping, as the Nes2Net releases do (its noise level
        and normalisation then refer to the utterance, not the crop).
    sample_rate : int
        Rate the model expects; other rates are resampled.

    Returns
    -------
    function
        A SpeechBrain dynamic item taking ``wav`` and providing ``sig`` and
        ``audio_error``.
    """
    # Only decode what the fixed-length evaluation protocol keeps (not when
    # augmenting: the augmentation sees the whole utterance, as in the releases).
    max_seconds = None
    if num_samples is not None and not random_crop and augment is None:
        max_seconds = num_samples / sample_rate

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig", "audio_error")
    def pipeline(wav):
        """Loads one file (silence and the reason when it is unusable), then crops or pads it."""
        try:
            sig = load_audio(wav, sample_rate=sample_rate, max_seconds=max_seconds)
            error = ""
        except AudioError as err:
            sig, error = torch.zeros(num_samples or PLACEHOLDER_SAMPLES), str(err)
        if augment is not None and not error:
            sig = augment(sig)
        if num_samples is not None:
            sig = fixed_length(sig, num_samples, random_offset=random_crop)
        elif sig.shape[0] < min_samples:
            sig = fixed_length(sig, min_samples)
        yield sig
        yield error

    return pipeline


@sb.utils.data_pipeline.takes("label")
@sb.utils.data_pipeline.provides("label_id")
def label_pipeline(label):
    """Encodes ``bonafide`` / ``spoof`` as a one-element 1 / 0 tensor."""
    return torch.tensor([LABEL_IDS[label]])


def manifest_dataset(path, pipeline, sort_by_duration=False, corpus=""):
    """Reads a manifest into a :class:`DynamicItemDataset` with our pipelines.

    Arguments
    ---------
    path : str or Path
        Manifest CSV (validated by :func:`speechbrain_nes2net.manifest.read_manifest`).
    pipeline : function
        The audio dynamic item from :func:`audio_pipeline`.
    sort_by_duration : bool
        Order the utterances longest first, for evaluation batches with little
        padding.
    corpus : str
        The ``<corpus>/<split>`` the manifest is (each item's ``corpus``;
        several corpora train and validate together, see
        :mod:`speechbrain_nes2net.training.sampling`).

    Returns
    -------
    DynamicItemDataset
        Items with ``id``, ``sig``, ``audio_error``, ``label_id``, ``label``,
        ``attack``, ``corpus``.
    """
    frame = read_manifest(path)
    records = frame.set_index("ID").to_dict(orient="index")
    for record in records.values():
        record["corpus"] = corpus
    dataset = DynamicItemDataset(records)
    dataset.add_dynamic_item(pipeline)
    dataset.add_dynamic_item(label_pipeline)
    dataset.set_output_keys(["id", "sig", "audio_error", "label_id", "label", "attack", "corpus"])
    if sort_by_duration:
        dataset = dataset.filtered_sorted(sort_key="duration", reverse=True)
    return dataset
