"""Waveform loading and the Kaldi log-mel fbank features the AST teacher reads.

`fbank` gives exactly what HF `ASTFeatureExtractor(do_normalize=False)` gives (its numpy path,
which matches `torchaudio.compliance.kaldi.fbank`): 25 ms Hanning (symmetric) frames every 10 ms
with no edge padding, per-frame DC removal, pre-emphasis 0.97, no dither, power spectrum of a
512-point FFT, 128 Kaldi mel triangles from 20 Hz to Nyquist, natural log floored at float32
epsilon. It uses `transformers.audio_utils`' window and mel filters (the frames themselves are
computed all at once), so no torch or torchaudio is needed.

Normalisation is `(x - mean) / (2 * std)` like AST, with statistics computed from the examples
the protocol allows (clean: train audio only; paper: all audio) and stored beside the teacher.
Features are cached at two levels, so no run computes them twice:
- per wav file in the stage's cache folder (`cached_fbank`), so a killed run resumes;
- per dataset, one `fbank-<key>.npy` array next to the wavs (`features_for(shared_dir=...)`),
  which every teacher run, search trial and retrain reading the same wavs loads at once. Its
  key is the feature settings plus the name, size and mtime of every wav it holds.
"""

import functools
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
from absl import logging
from transformers import audio_utils

from mh3 import files
from mh3.errors import UserError

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms at 16 kHz
FFT_LENGTH = 512  # Kaldi rounds the frame up to a power of two
PREEMPHASIS = 0.97
# Kaldi floors mel energies at float32 machine epsilon before the log.
MEL_FLOOR = float(np.finfo(np.float32).eps)
# Bump when the feature computation changes, so stale cache files are not reused.
_FEATURE_VERSION = 1


@functools.lru_cache(maxsize=8)
def _mel_filters(num_mel_bins: int, sample_rate: int) -> np.ndarray:
    # With 128 bins on a 512-point FFT the lowest Kaldi triangles are narrower than one FFT
    # bin and come out all zero; that is Kaldi's (and AST's) behaviour, so silence the warning.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        return audio_utils.mel_filter_bank(
            num_frequency_bins=FFT_LENGTH // 2 + 1,
            num_mel_filters=num_mel_bins,
            min_frequency=20,
            max_frequency=sample_rate // 2,
            sampling_rate=sample_rate,
            norm=None,
            mel_scale="kaldi",
            triangularize_in_mel_space=True,
        )


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    # Kaldi's "hanning" is the symmetric Hann window.
    return audio_utils.window_function(FRAME_LENGTH, "hann", periodic=False)


def pad_or_cut(features: np.ndarray, max_length: int) -> np.ndarray:
    """Zero-pads or truncates `features` (frames, bins) along time to `max_length` frames."""
    frames = features.shape[0]
    if frames >= max_length:
        return features[:max_length]
    pad = np.zeros((max_length - frames, features.shape[1]), dtype=features.dtype)
    return np.concatenate([features, pad], axis=0)


def fbank(
    waveform: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    num_mel_bins: int = 128,
    max_length: int | None = None,
) -> np.ndarray:
    """Kaldi log-mel filterbank features of a mono waveform in [-1, 1].

    Args:
      waveform: 1-D float waveform (not scaled to int16, like ASTFeatureExtractor).
      sample_rate: must be 16,000 Hz, the rate the frame sizes are defined for.
      num_mel_bins: number of mel triangles.
      max_length: when given, the result is zero-padded or cut to this many frames.

    Returns:
      float32 array (frames, num_mel_bins); frames = 1 + (len - 400) // 160 for audio of at
      least 400 samples, else 0 (before padding).
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"fbank expects {SAMPLE_RATE} Hz audio, got {sample_rate}; resample first")
    waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
    if max_length is not None:
        # Frames are independent (no centring, per-frame DC removal and pre-emphasis), so
        # samples past the last kept frame cannot change the result: skip their FFTs.
        waveform = waveform[: (max_length - 1) * HOP_LENGTH + FRAME_LENGTH]
    if waveform.size < FRAME_LENGTH:
        features = np.zeros((0, num_mel_bins), dtype=np.float32)
    else:
        features = _log_mel(waveform, num_mel_bins, sample_rate)
    if max_length is not None:
        features = pad_or_cut(features, max_length)
    return features


def _log_mel(waveform: np.ndarray, num_mel_bins: int, sample_rate: int) -> np.ndarray:
    """(frames, num_mel_bins) float32: `transformers.audio_utils.spectrogram` with the settings
    in the module docstring, computed for all frames at once instead of in its Python loop
    over frames (about 3x faster), in the same float64 steps with its complex64 rounding of
    the FFT, so the values are the same (tested)."""
    x = waveform.astype(np.float64)
    # 1 + (len - 400) // 160 frames, as the loop makes.
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME_LENGTH)[::HOP_LENGTH]
    frames = frames - frames.mean(axis=1, keepdims=True)
    emphasised = np.empty_like(frames)
    emphasised[:, 1:] = frames[:, 1:] - PREEMPHASIS * frames[:, :-1]
    emphasised[:, 0] = frames[:, 0] * (1 - PREEMPHASIS)
    emphasised *= _window()
    spectrum = np.fft.rfft(emphasised, n=FFT_LENGTH, axis=1).astype(np.complex64)
    power = np.abs(spectrum, dtype=np.float64) ** 2.0
    mel = np.maximum(MEL_FLOOR, _mel_filters(num_mel_bins, sample_rate).T @ power.T)
    return np.log(mel).T.astype(np.float32)


def load_audio(path: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Reads an audio file as mono float32, resampled to `sample_rate` (librosa).

    Raises:
      UserError: the file is missing or cannot be decoded, naming it.
    """
    import librosa  # slow import; only audio stages need it

    if not os.path.exists(path):
        raise UserError(f"audio file {path} does not exist; run the tts stage first")
    try:
        audio, _ = librosa.load(path, sr=sample_rate, mono=True)
    except Exception as e:  # librosa/soundfile raise many types for a bad file
        raise UserError(f"cannot read audio file {path} ({e}); delete it and rerun tts") from None
    return audio.astype(np.float32)


# ---- normalisation -------------------------------------------------------------------------


def compute_stats(features: Iterable[np.ndarray]) -> dict:
    """Mean and standard deviation of every value of the given feature arrays, pooled.

    Computed in one pass with float64 sums, so a whole dataset never sits in memory. Pass only
    the examples the protocol allows: the train split (clean) or all examples (paper).

    Returns:
      {'mean': float, 'std': float, 'count': number of values}.
    """
    total = total_sq = 0.0
    count = 0
    for x in features:
        x = np.asarray(x, dtype=np.float64)
        total += float(x.sum())
        total_sq += float(np.square(x).sum())
        count += x.size
    if count == 0:
        raise ValueError("compute_stats needs at least one non-empty feature array")
    mean = total / count
    var = max(total_sq / count - mean * mean, 0.0)
    return {"mean": mean, "std": float(np.sqrt(var)), "count": count}


def normalize(features: np.ndarray, stats: dict) -> np.ndarray:
    """AST normalisation `(x - mean) / (2 * std)`."""
    return ((features - stats["mean"]) / (2.0 * stats["std"])).astype(np.float32)


def save_stats(path: str, stats: dict) -> None:
    """Writes normalisation statistics as a small JSON file (atomically)."""
    files.write_json(path, {k: stats[k] for k in ("mean", "std", "count") if k in stats})


def load_stats(path: str) -> dict:
    """Reads statistics written by `save_stats`.

    Raises:
      UserError: the file is missing or lacks mean/std.
    """
    try:
        stats = files.read_json(path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read normalisation statistics {path} ({e})") from None
    if not {"mean", "std"} <= set(stats):
        raise UserError(f"{path}: normalisation statistics need 'mean' and 'std' keys")
    return stats


# ---- per-example cache ---------------------------------------------------------------------


def _cache_key(wav_path: str, num_mel_bins: int, max_length: int | None) -> str:
    # The file's size and mtime are part of the key: a wav remade by the tts stage gets new
    # features instead of stale ones.
    st = os.stat(wav_path)
    key = json.dumps(
        [
            os.path.abspath(wav_path),
            st.st_size,
            st.st_mtime_ns,
            num_mel_bins,
            max_length,
            _FEATURE_VERSION,
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def cached_fbank(
    wav_path: str,
    cache_dir: str | None,
    *,
    num_mel_bins: int = 128,
    max_length: int | None = None,
) -> np.ndarray:
    """`fbank(load_audio(wav_path))`, read from / written to `cache_dir` as one .npy per file.

    Args:
      wav_path: the audio file.
      cache_dir: folder for the cache; None computes without caching.
      num_mel_bins: see `fbank`.
      max_length: see `fbank`.

    Returns:
      float32 array (frames, num_mel_bins), not normalised.
    """
    if cache_dir is None:
        return fbank(load_audio(wav_path), num_mel_bins=num_mel_bins, max_length=max_length)
    if not os.path.exists(wav_path):
        raise UserError(f"audio file {wav_path} does not exist; run the tts stage first")
    stem = os.path.splitext(os.path.basename(wav_path))[0]
    path = os.path.join(cache_dir, f"{stem}-{_cache_key(wav_path, num_mel_bins, max_length)}.npy")
    if os.path.exists(path):
        try:
            return np.load(path)
        except (OSError, ValueError):
            logging.warning("feature cache file %s is unreadable; recomputing", path)
    features = fbank(load_audio(wav_path), num_mel_bins=num_mel_bins, max_length=max_length)
    files.atomic_write(path, lambda tmp: np.save(tmp, features))
    return features


def _shared_key(
    names: Sequence[str], stats: Sequence[os.stat_result], num_mel_bins: int, max_length: int
) -> str:
    # The wavs' names, sizes and mtimes stand for their contents: tts writes each file under a
    # temporary name and renames it, so a remade wav always gets a new mtime.
    wavs = [[n, st.st_size, st.st_mtime_ns] for n, st in zip(names, stats, strict=True)]
    key = json.dumps([SAMPLE_RATE, num_mel_bins, max_length, _FEATURE_VERSION, wavs])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def shared_cache(
    wav_paths: Sequence[str], shared_dir: str, *, num_mel_bins: int = 128, max_length: int
) -> tuple[str, np.ndarray]:
    """Where the dataset-level cache of `wav_paths` lives, and the row of each path in it.

    Rows are in the order of the file names, so the same set of wavs asked for in another
    order (the student reads examples by index) finds the same file.

    Returns:
      (`<shared_dir>/fbank-<key>.npy`, rows: int array, rows[i] = row of wav_paths[i]).
    """
    names = [os.path.basename(p) for p in wav_paths]
    order = sorted(range(len(names)), key=names.__getitem__)
    stats = [os.stat(wav_paths[i]) for i in order]
    key = _shared_key([names[i] for i in order], stats, num_mel_bins, max_length)
    rows = np.empty(len(order), np.int64)
    rows[order] = np.arange(len(order))
    return os.path.join(shared_dir, f"fbank-{key}.npy"), rows


class _Rows:
    """Rows of a memory-mapped array in another order, read one at a time or all at once."""

    def __init__(self, array: np.ndarray, rows: np.ndarray):
        self.array, self.rows = array, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.array(self.array[self.rows[i]])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self.array[self.rows], dtype=dtype)


def read_shared(
    wav_paths: Sequence[str], shared_dir: str | None, *, num_mel_bins: int = 128, max_length: int
) -> _Rows | None:
    """The dataset-level cached features of `wav_paths` (rows in their order, memory-mapped
    until indexed), or None when there is no usable cache file."""
    if shared_dir is None or not wav_paths:
        return None
    path, rows = shared_cache(
        wav_paths, shared_dir, num_mel_bins=num_mel_bins, max_length=max_length
    )
    if not os.path.exists(path):
        return None
    try:
        x = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        logging.warning("feature cache file %s is unreadable; recomputing", path)
        return None
    if x.shape != (len(rows), max_length, num_mel_bins):
        logging.warning("feature cache file %s has shape %s; recomputing", path, x.shape)
        return None
    logging.info("fbank features of %d wavs read from %s", len(rows), path)
    return _Rows(x, rows)


def features_for(
    wav_paths: Sequence[str],
    cache_dir: str | None,
    *,
    num_mel_bins: int = 128,
    max_length: int,
    progress: bool = True,
    shared_dir: str | None = None,
) -> np.ndarray:
    """Stacked fbank features (N, max_length, num_mel_bins) for many files.

    Args:
      wav_paths: the audio files.
      cache_dir: per-file cache folder (`cached_fbank`); None: no per-file cache.
      num_mel_bins, max_length: see `fbank`.
      progress: show a progress bar while computing.
      shared_dir: folder of the dataset-level cache (module docstring), normally the wav
        folder itself; read when it holds the file for these wavs and settings, else written
        after computing (skipped with a warning where the folder is read-only).
    """
    from tqdm import tqdm

    shared = read_shared(wav_paths, shared_dir, num_mel_bins=num_mel_bins, max_length=max_length)
    if shared is not None:
        return np.asarray(shared)
    out = np.zeros((len(wav_paths), max_length, num_mel_bins), dtype=np.float32)
    for i, path in enumerate(tqdm(wav_paths, desc="fbank", disable=not progress)):
        out[i] = cached_fbank(path, cache_dir, num_mel_bins=num_mel_bins, max_length=max_length)
    if shared_dir is not None and wav_paths:
        path, rows = shared_cache(
            wav_paths, shared_dir, num_mel_bins=num_mel_bins, max_length=max_length
        )

        def write(tmp):
            # Straight into a memory-mapped .npy, so the reordered copy never sits in memory.
            m = np.lib.format.open_memmap(tmp, mode="w+", dtype=out.dtype, shape=out.shape)
            m[rows] = out
            m.flush()

        try:
            files.atomic_write(path, write)
            logging.info("fbank features of %d wavs cached in %s", len(wav_paths), path)
        except OSError as e:  # a read-only wav folder: the per-file cache still works
            logging.warning("cannot write the shared feature cache %s (%s)", path, e)
    return out
