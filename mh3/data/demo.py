"""The embedded demo dataset: SYNTHETIC posts written by mh3, not real people's words.

It exists so that the default pipeline runs offline with nothing to download. Every post is
assembled deterministically from the phrase banks below (all written for this project): a
shared opener, two "signal" phrases, a shared context phrase and sometimes a shared ending with
an emoji, emoticon, URL or @user (so preprocessing and added tokens are exercised). Each signal
phrase comes from the post's own class with probability 0.7 and from another class otherwise,
and the banks share vocabulary, so a classifier can learn the classes well above chance (1/3)
but not perfectly (about 0.7 is the best a reader of the signals can do).
"""

import numpy as np

CLASSES = ("neutral", "stress", "low_mood")
N_TRAIN, N_TEST = 240, 60
_SEED = 20240711
_OWN_CLASS_P = 0.7

_OPENERS = (
    "so today", "honestly", "not sure why i am posting this but", "quick update:",
    "this week", "long story short,", "ok so", "anyway", "i guess", "lately",
    "at work today", "after class",
)  # fmt: skip
_CONTEXT = (
    "my roommate keeps asking about it.", "the weather has been grey all week.",
    "i had coffee with my sister.", "the bus was late again.", "i have an exam on friday.",
    "my boss sent another email.", "i barely slept last night.", "the rent is due soon.",
    "i cooked pasta for dinner.", "my phone keeps dying.", "the gym was packed.",
    "my mom called this morning.",
)  # fmt: skip
_SIGNALS = {
    "neutral": (
        "i feel pretty okay about it",
        "work was fine and i got things done",
        "i slept well and feel rested",
        "i am looking forward to the weekend",
        "the deadline went fine in the end",
        "i went for a walk and it helped",
        "things feel normal for once",
        "i laughed a lot with friends",
        "my exam went better than expected",
        "i feel calm about the week ahead",
        "nothing special happened and that is fine",
        "i finally cleaned my room",
    ),
    "stress": (
        "i feel so much pressure at work",
        "the deadline is crushing me",
        "i can not stop worrying about the exam",
        "my heart races when my boss emails",
        "i have too many things to do and no time",
        "i feel tense all day",
        "the rent is stressing me out",
        "i keep panicking about money",
        "i slept badly because my mind will not stop",
        "everything feels urgent",
        "i feel on edge about the week ahead",
        "i snapped at my friends from stress",
    ),
    "low_mood": (
        "i feel empty most days",
        "nothing feels worth doing anymore",
        "i slept all day and still feel tired",
        "i do not enjoy things i used to love",
        "i feel alone even with friends",
        "i can not get out of bed",
        "work feels pointless lately",
        "i cried again for no reason",
        "i feel like a burden to everyone",
        "the weekend means nothing to me",
        "i stopped answering my mom",
        "i feel numb about the exam",
    ),
}
_ENDINGS = (
    "", "", "", "", "", "", " :)", " :(", " xD", " 😔", " 😊", " 😩", " <3",
    " see https://example.org/help", " thanks @demo_friend", " mail me at demo@example.org",
)  # fmt: skip


def generate() -> list[tuple[str, str, str, str]]:
    """All demo posts as (id, text, class name, split) in a fixed order: train, then test.

    The same list on every machine and every call (a fixed numpy seed).
    """
    rng = np.random.default_rng(_SEED)
    rows = []
    for i in range(N_TRAIN + N_TEST):
        own = CLASSES[i % len(CLASSES)]
        signals = []
        for _ in range(2):
            cls = own
            if rng.random() > _OWN_CLASS_P:
                cls = str(rng.choice([c for c in CLASSES if c != own]))
            bank = _SIGNALS[cls]
            signals.append(bank[rng.integers(len(bank))])
        opener = _OPENERS[rng.integers(len(_OPENERS))]
        context = _CONTEXT[rng.integers(len(_CONTEXT))]
        ending = _ENDINGS[rng.integers(len(_ENDINGS))]
        # A capitalised first letter so that lower-casing has something to do.
        text = f"{opener} {signals[0]}. {context} {signals[1]}.{ending}"
        text = text[0].upper() + text[1:]
        split = "train" if i < N_TRAIN else "test"
        rows.append((f"demo-synthetic-{i:04d}", text, own, split))
    return rows
