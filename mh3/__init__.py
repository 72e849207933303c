"""mh3: a functional JAX/Flax reimplementation of 3M-Health.

3M-Health (Cabral et al., CIKM 2024) detects mental-health conditions in social-media posts
with several teachers (text, emotion, audio of the post spoken aloud) distilled into a
text-only BERT student. See README.md for the commands and the map of the code.
"""

__version__ = "0.1.0"


def load(folder: str):
    """Loads a saved model (`<workdir>/model/`) as a predictor: `load(dir).predict(inputs)`
    returns class probabilities (see mh3.saved_model)."""
    from mh3 import saved_model

    return saved_model.load(folder)
