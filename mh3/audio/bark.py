"""Bark, the paper's voice: transformers' `BarkModel` and `BarkProcessor` (24 kHz), on PyTorch.

Bark chains three sampled models. The semantic model samples at the text temperature (0.7),
the coarse model at the waveform temperature (0.7), and the fine model at 0.5, the value
suno's own `generate_audio` fixes. Each piece is seeded by seeding torch before it is spoken.
torch and transformers are imported only when a `BarkBackend` is made, so importing this
module (and the tts writer, which names it) stays cheap.
"""

import os

import numpy as np

from mh3.errors import UserError


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
