"""Data pipelines: manifests into SpeechBrain datasets of waveforms and labels.

Training crops (or repeat-pads) every utterance to a fixed length, optionally
at a random offset, after augmenting the whole utterance (RawBoost); evaluation
reads the full utterance or its first samples (the "first 4 s" protocols).
Audio is read through :func:`speechbrain_nes2net.audio.load_audio`.

Authors
 * speechbrain-nes2net contributors
"""

import logging

import numpy as np
import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset

from speechbrain_nes2net.audio import (
    DEFAULT_SAMPLE_RATE,
    AudioError,
    evaluation_crop,
    fixed_length,
    load_audio,
)
from speechbrain_nes2net.manifest import read_manifest
from speechbrain_nes2net.scores import LABEL_IDS
from speechbrain_nes2net.segments import load_segment_labels

logger = logging.getLogger(__name__)

#: Length of the silent stand-in for an unusable file (see :func:`audio_pipeline`).
PLACEHOLDER_SAMPLES = 16000


def load_utterance(wav, sample_rate, num_samples, random_crop, augment):
    """One file for a pipeline: ``(waveform, "")``, or silence and the reason it is unusable.

    An unusable file yields ``num_samples`` (or :data:`PLACEHOLDER_SAMPLES`)
    zeros, so that the batch goes on and the Brain reports and skips the file.
    ``augment`` applies to the whole decoded utterance (before any crop).
    """
    # Only decode what the fixed-length evaluation protocol keeps (not when
    # augmenting: the augmentation sees the whole utterance, as in the releases).
    max_seconds = None
    if num_samples is not None and not random_crop and augment is None:
        max_seconds = num_samples / sample_rate
    try:
        sig = load_audio(wav, sample_rate=sample_rate, max_seconds=max_seconds)
    except AudioError as err:
        return torch.zeros(num_samples or PLACEHOLDER_SAMPLES), str(err)
    return (augment(sig) if augment is not None else sig), ""


def audio_pipeline(
    num_samples=None, random_crop=False, min_samples=0, augment=None, sample_rate=DEFAULT_SAMPLE_RATE
):
    """Builds the dynamic item that turns a manifest ``wav`` path into ``sig``.

    An unusable file (missing, corrupt, empty, NaN samples) does not stop the
    data loader: its ``sig`` is silence and ``audio_error`` says what is wrong
    (empty for a good file), so the ``Brain`` leaves it out of the loss and
    the scores and reports it, while every DDP process runs the same batches.

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
        Augmentation of the whole (samples,) waveform before the crop, as the
        Nes2Net releases apply RawBoost (its noise level then refers to the
        utterance, not the crop).
    sample_rate : int
        Rate the model expects; other rates are resampled.

    Returns
    -------
    function
        A dynamic item taking ``wav`` and providing ``sig`` and ``audio_error``.
    """

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig", "audio_error")
    def pipeline(wav):
        """Loads one file (silence and the reason when it is unusable), then crops or pads it."""
        sig, error = load_utterance(wav, sample_rate, num_samples, random_crop, augment)
        if random_crop and num_samples is not None:
            sig = fixed_length(sig, num_samples, random_offset=True)
        else:  # the cut of every scoring engine
            sig = evaluation_crop(sig, num_samples, min_samples)
        yield sig
        yield error

    return pipeline


def crop_indices(length, num_samples, random_offset=False, step=1):
    """The sample indices that crop or repeat-pad a waveform to ``num_samples``.

    As :func:`~speechbrain_nes2net.audio.fixed_length` does, but the indices
    are returned, so that frame-level truth can follow the waveform, and a
    random offset is a multiple of ``step`` samples (the segment length of
    the labels: a crop starting on the label grid keeps its labels exact).

    Arguments
    ---------
    length : int
        Samples of the waveform (at least 1).
    num_samples : int
        Output length.
    random_offset : bool
        Crop at a uniformly random offset on the ``step`` grid instead of the start.
    step : int
        Grid of the random offsets, in samples.

    Returns
    -------
    torch.Tensor
        (num_samples,) int64 indices into the waveform.

    Example
    -------
    >>> crop_indices(3, 7).tolist()
    [0, 1, 2, 0, 1, 2, 0]
    >>> offsets = {int(crop_indices(1000, 100, True, step=320)[0]) for _ in range(50)}
    >>> sorted(offsets)
    [0, 320, 640]
    """
    if length < num_samples:
        return torch.arange(num_samples) % length
    offset = 0
    if random_offset and length > num_samples:
        slots = (length - num_samples) // step + 1
        offset = step * int(torch.randint(0, slots, (1,)))
    return torch.arange(offset, offset + num_samples)


def segment_truth(labels, indices, segment_samples):
    """Segment labels of a waveform cut out of (or repeated from) a labelled one.

    Each output sample takes the label of the source segment its index falls
    in (indices past the last label take the last one); each output segment
    of ``segment_samples`` samples is spoof (0) when any of its samples is
    (PartialSpoof's rule), else bona fide (1). A crop on the label grid keeps
    the labels exactly; a repeat-padded waveform repeats them.

    Arguments
    ---------
    labels : array-like
        Source segment labels, 1 = bona fide, 0 = spoof.
    indices : torch.Tensor
        Source index of every output sample (:func:`crop_indices`).
    segment_samples : int
        Samples per segment (the labels' shift times the sampling rate).

    Returns
    -------
    torch.Tensor
        ``ceil(len(indices) / segment_samples)`` int64 labels.

    Example
    -------
    >>> segment_truth([1, 0, 1], torch.arange(1, 7), 2).tolist()   # a crop off the grid
    [0, 0, 1]
    >>> segment_truth([1, 0], torch.arange(6) % 4, 2).tolist()      # repeat-padded
    [1, 0, 1]
    """
    labels = torch.as_tensor(np.asarray(labels).astype(np.int64))
    source = (indices // segment_samples).clamp(max=labels.numel() - 1)
    per_sample = labels[source]
    count = -(-per_sample.numel() // segment_samples)
    padded = torch.ones(count * segment_samples, dtype=torch.int64)
    padded[: per_sample.numel()] = per_sample
    return padded.view(count, segment_samples).amin(dim=1)


def localization_pipeline(
    segment_shift, num_samples=None, random_crop=False, min_samples=0, augment=None,
    sample_rate=DEFAULT_SAMPLE_RATE,
):  # fmt: skip
    """Like :func:`audio_pipeline`, plus the segment labels of the waveform it yields.

    The labels of the manifest's ``segment_labels`` template at
    ``segment_shift`` seconds (:func:`speechbrain_nes2net.segments.load_segment_labels`)
    follow the crop (random crops start on the label grid) or the
    repeat-padding (:func:`segment_truth`).

    Arguments
    ---------
    segment_shift : float
        Resolution of the labels, in seconds (one of the released shifts).
    num_samples, random_crop, min_samples, augment, sample_rate
        As for :func:`audio_pipeline`.

    Returns
    -------
    function
        A dynamic item taking ``wav``, ``id`` and ``segment_labels`` and
        providing ``sig``, ``audio_error`` and ``segment_truth``.
    """
    segment_samples = round(segment_shift * sample_rate)

    @sb.utils.data_pipeline.takes("wav", "id", "segment_labels")
    @sb.utils.data_pipeline.provides("sig", "audio_error", "segment_truth")
    def pipeline(wav, utt_id, template):
        """Loads, crops or pads one file, and cuts its segment labels alike."""
        sig, error = load_utterance(wav, sample_rate, num_samples, random_crop, augment)
        length = sig.shape[0]
        target = num_samples if num_samples is not None else max(length, min_samples)
        indices = crop_indices(length, target, random_crop, step=segment_samples)
        yield sig[indices]
        yield error
        if error:
            yield torch.ones(-(-target // segment_samples), dtype=torch.int64)
        else:
            labels = load_segment_labels(template, utt_id, segment_shift)
            yield segment_truth(labels, indices, segment_samples)

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
        Longest first, for evaluation batches with little padding.
    corpus : str
        The ``<corpus>/<split>`` of the manifest (each item's ``corpus``).

    Returns
    -------
    DynamicItemDataset
        Items with ``id``, ``sig``, ``audio_error``, ``label_id``, ``label``,
        ``attack``, ``corpus``, ``duration`` (seconds, from the manifest), and
        ``segment_truth`` with :func:`localization_pipeline`.
    """
    frame = read_manifest(path)
    records = frame.set_index("ID").to_dict(orient="index")
    for record in records.values():
        record["corpus"] = corpus
    dataset = DynamicItemDataset(records)
    dataset.add_dynamic_item(pipeline)
    dataset.add_dynamic_item(label_pipeline)
    keys = ["id", "sig", "audio_error", "label_id", "label", "attack", "corpus", "duration"]
    if "segment_truth" in getattr(pipeline, "provides", ()):
        keys.append("segment_truth")
    dataset.set_output_keys(keys)
    if sort_by_duration:
        dataset = dataset.filtered_sorted(sort_key="duration", reverse=True)
    return dataset
