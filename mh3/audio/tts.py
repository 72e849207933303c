"""The resumable writer of one wav per example (SPEC stage 1), over any text-to-speech backend.

A backend speaks one piece of text and returns float32 audio at its own sample rate. The two
model families live in their own modules; `make_backend` picks one from the config:
- `piper` (mh3.audio.piper): the offline neural voice, 22,050 Hz, seeded per piece so the same
  text and seed give the same bytes;
- `bark` (mh3.audio.bark): transformers' Bark, 24 kHz, the paper's voice; torch is imported
  only when it is made.

`synthesize` cuts a text with `mh3.audio.chunk.split_text`, speaks each piece and puts 0.25 s
of silence after every piece (the last too). `write_wavs` writes `Sample_{i}.wav` files
atomically, skips files a previous run finished, remakes unreadable ones and keeps a manifest;
with `workers` > 1 it speaks in that many processes, each with its own voice.
"""

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable
from typing import Protocol

import numpy as np
from absl import logging

from mh3 import files, host
from mh3.audio import bark, piper
from mh3.audio.chunk import split_text
from mh3.errors import UserError

PAUSE_S = 0.25
MANIFEST = "manifest.json"
# Appended one line per finished file, so a killed run knows what it had finished.
PROGRESS = "manifest.partial.jsonl"


class Backend(Protocol):
    """What `synthesize` needs from a voice.

    A backend that can be rebuilt in another process also has `worker_spec`, a picklable
    (class, args, kwargs) from which `write_wavs`'s worker processes make their own voice.
    """

    name: str
    sample_rate: int

    def speak(self, text: str, seed: int) -> np.ndarray:
        """float32 mono audio in [-1, 1] for one piece of text."""


PIPER_HINT = (
    "or use the offline piper backend: --config.tts.backend=piper "
    "(--config.tts.tts.backend=piper when a teacher stage runs tts)"
)


def make_backend(tts_config) -> Backend:
    """Builds the backend named by `tts_config.backend` from the `tts` block of the config."""
    if tts_config.backend == "piper":
        return piper.PiperBackend(tts_config.voice)
    if tts_config.backend == "bark":
        try:
            return bark.BarkBackend(
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


def resolve_workers(workers: int) -> int:
    """`tts.workers` as a process count: 0 means one per CPU core this process may use."""
    if workers < 0:
        raise UserError(f"tts.workers={workers}; use 0 (one per core) or a positive count")
    if workers == 0:
        return host.usable_cores()
    return workers


# write_wavs starts at most one worker process per this many characters of text to speak
# (about 4-5 minutes of speech): a worker needs seconds to start and load its own voice.
CHARS_PER_WORKER = 4000
# The voice of a worker process (write_wavs with workers > 1), built once by _start_worker.
_WORKER_BACKEND = None


def exit_with_parent() -> None:
    """Ends this process within a second of its parent's end. A parent killed outright
    (SIGKILL, OOM) cannot stop its children: a speech worker would wait on the pool's queues
    for ever, and a background tts stage would speak on, holding its workdir's lock."""
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _start_worker(spec) -> None:
    global _WORKER_BACKEND
    exit_with_parent()
    cls, args, kwargs = spec
    _WORKER_BACKEND = cls(*args, **kwargs)


def _speak_job(job) -> tuple[np.ndarray, float]:
    text, kwargs = job
    start = time.perf_counter()
    audio = synthesize(text, _WORKER_BACKEND, **kwargs)
    return audio, time.perf_counter() - start


def _spoken(jobs: list, backend: Backend, workers: int):
    """Yields (audio, synthesis seconds) for each job in order, from `workers` processes.

    Each worker builds its own voice from `backend.worker_spec`; a backend without one (Bark,
    whose model would be copied into every process) speaks here, one file after another. The
    audio is written by the caller, in order, so the progress log stays one writer's.
    """
    if workers <= 1:
        for text, kwargs in jobs:
            start = time.perf_counter()
            audio = synthesize(text, backend, **kwargs)
            yield audio, time.perf_counter() - start
        return
    import multiprocessing

    # spawn, not fork: the parent may hold threads (ONNX Runtime's, JAX's) that fork would copy
    # in an undefined state.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(backend.worker_spec,)) as pool:
        # imap keeps the order; chunksize 1 so one long post does not hold back a batch.
        yield from pool.imap(_speak_job, jobs, chunksize=1)


def write_wavs(
    items: Iterable[tuple[int, str]],
    out_dir: str,
    backend: Backend,
    *,
    seed: int = 0,
    max_words: int = 45,
    pause_s: float = PAUSE_S,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Writes `out_dir/Sample_{i}.wav` for each (global index i, text); resumable.

    A file is skipped when a previous run recorded it for the same text and backend and it
    still decodes with the recorded length; anything else (missing, corrupt, cut short,
    other text) is made again. Files go to a temporary name and are renamed into place.
    With `workers` > 1 the files are spoken by up to that many processes (each with its own
    voice; one per CHARS_PER_WORKER characters to speak) and written here in order; a seeded
    backend gives the same bytes as one worker.

    Returns:
      {'manifest': path, 'files': n, 'made': n, 'skipped': n, 'empty': n, 'workers': n,
       'audio_seconds': seconds made this run, 'wall_seconds': wall time of making them
       (worker start included), 'real_time_factor': audio seconds per wall second (None when
       nothing was made), 'total_audio_seconds': all files}.
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
    manifest, todo, empty = {}, [], 0
    for index, text in items:
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
            and readable_frames(os.path.join(out_dir, entry["path"])) == old.get("frames")
        ):
            manifest[index] = old
            continue
        if not split_text(text, max_words):
            logging.warning("example %d has empty text; writing %.2f s of silence", index, pause_s)
            empty += 1
        todo.append((entry, text))
    chars = sum(len(text) for _, text in todo)
    skipped, workers = len(manifest), max(1, min(workers, len(todo), chars // CHARS_PER_WORKER))
    if getattr(backend, "worker_spec", None) is None:
        workers = 1
    jobs = [
        (text, dict(seed=seed, index=e["id"], max_words=max_words, pause_s=pause_s))
        for e, text in todo
    ]
    audio_s, start = 0.0, time.perf_counter()
    # closing: a failure here (a full disk, Ctrl-C) stops the worker processes at once, rather
    # than when the traceback holding the generator is dropped.
    with (
        open(progress_path, "a") as log,
        contextlib.closing(_spoken(jobs, backend, workers)) as spoken,
    ):
        for (entry, _), (audio, synth_s) in tqdm(
            zip(todo, spoken, strict=True),
            total=len(todo),
            desc=f"tts ({backend.name}, {workers} worker{'s' * (workers > 1)})",
            disable=not progress,
        ):
            path = os.path.join(out_dir, entry["path"])
            files.atomic_write(path, lambda tmp, a=audio: _write_wav(tmp, a, backend.sample_rate))
            entry["frames"] = int(audio.shape[0])
            entry["duration"] = audio.shape[0] / backend.sample_rate
            entry["synth_seconds"] = round(synth_s, 4)
            audio_s += entry["duration"]
            log.write(json.dumps(entry) + "\n")
            log.flush()
            manifest[entry["id"]] = entry
    wall_s = time.perf_counter() - start if todo else 0.0
    manifest = [manifest[index] for index, _ in items if index in manifest]
    manifest_path = os.path.join(out_dir, MANIFEST)
    files.write_json(manifest_path, manifest)
    made = len(todo)
    rtf = audio_s / wall_s if wall_s > 0 else None
    if made:
        logging.info(
            "tts: %.1f s of audio in %.1f s wall, real-time factor %.2f", audio_s, wall_s, rtf
        )
        print(
            f"tts: made {made} files ({audio_s:.1f} s of audio) in {wall_s:.1f} s with "
            f"{workers} worker{'s' * (workers > 1)}: real-time factor {rtf:.2f} "
            "(audio seconds per wall second)"
        )
    return {
        "manifest": manifest_path,
        "files": len(manifest),
        "made": made,
        "skipped": skipped,
        "empty": empty,
        "workers": workers,
        "audio_seconds": audio_s,
        "wall_seconds": wall_s,
        "real_time_factor": rtf,
        "total_audio_seconds": float(sum(e["duration"] for e in manifest)),
    }
