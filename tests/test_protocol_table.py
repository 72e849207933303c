"""README's "Protocols: clean vs paper" table lists every config key whose resolved value differs
between `protocol=clean` and `protocol=paper`, with both values.

The rows are computed by resolving each stage config both ways and diffing them flattened.
A block that is itself another stage's config (the student's teachers, the emotion teacher's
embeddings, the audio teacher's tts) is reported under that stage, and the shared `data` block
under `data` unless a stage sets it otherwise, so each key is listed once.
`python tests/test_protocol_table.py` prints the table for README.md.
"""

import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("data", "tts", "emotion_embeddings", "teacher_text", "teacher_emotion", "teacher_audio",
          "student", "search")  # fmt: skip
# config arguments besides the protocol; a search's `trial` block is its target's config,
# which the target's own rows cover
ARGS = {"search": "target=student,"}
SKIP = {"search": "trial."}
# nested block -> the stage config it is (prefixes are matched longest first)
NESTED = {
    "teacher_text": "teacher_text",
    "teacher_emotion": "teacher_emotion",
    "teacher_audio": "teacher_audio",
    "embeddings": "emotion_embeddings",
    "tts": "tts",
}


def _flat(block, prefix=""):
    out = {}
    for key, value in block.items():
        if hasattr(value, "items"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _owner(stage: str, key: str) -> tuple[str, str]:
    """(stage, key) of a flattened key, following nested stage blocks down."""
    head, _, rest = key.partition(".")
    if rest and head in NESTED and not (stage == "tts" and head == "tts"):
        return _owner(NESTED[head], rest)
    return stage, key


def _text(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, value)) + ")"
    return '""' if value == "" else str(value)


def rows() -> list[tuple[str, str, str, str]]:
    """(stage, key, clean value, paper value) for every differing key, sorted."""
    sys.path.insert(0, ROOT)
    out = set()
    for stage in STAGES:
        module = importlib.import_module(f"configs.{stage}")
        extra = ARGS.get(stage, "")
        clean = _flat(module.get_config(extra + "protocol=clean"))
        paper = _flat(module.get_config(extra + "protocol=paper"))
        for key in set(clean) | set(paper):
            if stage in SKIP and key.startswith(SKIP[stage]):
                continue
            a, b = clean.get(key, "(absent)"), paper.get(key, "(absent)")
            owner, own_key = _owner(stage, key)
            if a != b and own_key != "protocol":
                out.add((owner, own_key, _text(a), _text(b)))
    # The shared `data` block's rows are listed once, under `data`, unless a stage changes them.
    out = {r for r in out if r[0] == "data" or ("data", *r[1:]) not in out}
    order = {s: i for i, s in enumerate(STAGES)}
    return sorted(out, key=lambda r: (order[r[0]], r[1], r[2], r[3]))


def markdown() -> str:
    lines = ["| stage config | key | clean | paper |", "|---|---|---|---|"]
    lines += [f"| {s} | `{k}` | `{a}` | `{b}` |" for s, k, a, b in rows()]
    return "\n".join(lines)


def test_readme_lists_every_differing_key():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    missing = [line for line in markdown().splitlines() if line not in readme]
    assert not missing, "README.md's protocol table lacks:\n" + "\n".join(missing)


if __name__ == "__main__":
    print(markdown())
