"""mh3: a functional JAX/Flax reimplementation of 3M-Health.

3M-Health (Cabral et al., CIKM 2024) detects mental-health conditions in social-media posts
with several teachers (text, emotion, audio of the post spoken aloud) distilled into a
text-only BERT student. See README.md for the commands and the map of the code.
"""

import os

__version__ = "0.1.0"

# XLA CPU default (jaxlib 0.10): YNNPACK "library fusions" merge attention's two matmuls and
# its softmax into one kernel that runs at half the speed of plain XLA code; with no library
# fusion types, MiniLM's forward (batch 32 x 128 tokens, AMD EPYC Zen 4, 2 cores) takes 609
# instead of 876 ms and a training step 6% less (README "Performance"). Set here, before any
# jax backend exists, so every entry point gets it; an XLA_FLAGS that names the option, or
# MH3_XLA_DEFAULTS=0, keeps XLA's own choice. No effect once a backend has started.
YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="
if os.environ.get("MH3_XLA_DEFAULTS", "1") != "0" and (
    "xla_cpu_experimental_ynn_fusion_type" not in os.environ.get("XLA_FLAGS", "")
):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {YNN_OFF}".strip()


def load(folder: str):
    """Loads a saved model (`<workdir>/model/`) as a predictor: `load(dir).predict(inputs)`
    returns class probabilities (see mh3.saved_model)."""
    from mh3 import saved_model

    return saved_model.load(folder)
