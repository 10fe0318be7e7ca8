"""Audio files in the formats of phones and browsers (M4A/AAC, WebM/Opus, AMR), written by FFmpeg (PyAV)."""

import av
import numpy as np

#: Extension -> (container format, codec) as phones and browsers write them.
FORMATS = {
    "m4a": ("ipod", "aac"),  # iPhone voice memos, Android recorders
    "webm": ("webm", "libopus"),  # a browser's MediaRecorder
    "amr": ("amr", "libopencore_amrnb"),  # older phones' voice notes (8 kHz only)
    "aac": ("adts", "aac"),  # raw AAC frames, each with its own header
}


def write_with_ffmpeg(path, signal, rate):
    """Encodes (samples,) or (samples, channels) float audio into ``path``, by its extension."""
    container_format, codec = FORMATS[path.suffix.lstrip(".")]
    signal = np.asarray(signal, dtype=np.float32)
    signal = signal[:, None] if signal.ndim == 1 else signal
    layout = {1: "mono", 2: "stereo"}[signal.shape[1]]
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        sample_format = stream.codec_context.codec.audio_formats[0].name
        size = stream.codec_context.frame_size or 1024
        for start in range(0, len(signal), size):
            chunk = signal[start : start + size]
            if sample_format.endswith("p"):  # planar: (channels, samples)
                data = np.ascontiguousarray(chunk.T)
            else:  # packed: (1, samples x channels)
                data = chunk.reshape(1, -1)
            if sample_format.startswith("s16"):
                data = np.round(np.clip(data, -1, 32767 / 32768) * 32768).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(data, format=sample_format, layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
