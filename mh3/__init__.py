"""mh3: a functional JAX/Flax reimplementation of 3M-Health.

3M-Health (Cabral et al., CIKM 2024) detects mental-health conditions in social-media posts
with several teachers (text, emotion, audio of the post spoken aloud) distilled into a
text-only BERT student. See README.md for the commands and the map of the code.
"""

__version__ = "0.1.0"
