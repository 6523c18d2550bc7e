"""Deterministic synthetic IMDB_SAMPLE: ``texts.csv`` (``label``, ``text``, ``is_valid``).

Each review mixes opinions about aspects of a film (acting, plot, score...) with neutral
remarks; the label is the sign of the opinions' summed polarity, so some reviews argue
both ways. Wording varies (intensifiers, negations such as "not good" or "hardly boring",
contrasts, verdicts, scores out of ten, HTML line breaks as in the real data), so the
task is learnable from the words but not from single keywords.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

GENRES = ["thriller", "comedy", "drama", "western", "horror film", "romance", "war film", "musical", "documentary", "sci-fi film", "crime story", "family film"]
ASPECTS = ["acting", "plot", "script", "soundtrack", "cinematography", "dialogue", "ending", "pacing", "lead actress", "lead actor", "direction", "editing", "special effects", "supporting cast", "story", "score", "camera work", "costume design"]
POSITIVE = ["good", "great", "excellent", "wonderful", "superb", "brilliant", "moving", "clever", "beautiful", "delightful", "gripping", "memorable", "charming", "impressive", "fantastic", "touching"]
NEGATIVE = ["bad", "awful", "terrible", "dull", "boring", "weak", "clumsy", "lazy", "forgettable", "painful", "predictable", "tedious", "poor", "horrible", "messy", "lifeless"]
STRONG = ["really", "truly", "absolutely", "simply", "quite", "remarkably", "incredibly", "rather"]
SOFT_NEGATION = ["not", "never", "hardly", "not at all", "far from"]
PEOPLE = ["my wife", "a friend", "my parents", "the kids", "my brother", "some colleagues", "nobody", "my sister"]
PLACES = ["a small town", "Paris", "the desert", "a space station", "New York", "a farm", "the fifties", "a boarding school", "a fishing village"]
NEUTRAL = [
    "I watched it on a {day} evening with {people}.",
    "It runs a little under {minutes} minutes.",
    "The story is set in {place}.",
    "It is a {genre} from {year}.",
    "I saw it at the local cinema.",
    "The director also made a {genre} a few years ago.",
    "Most of it was shot in {place}.",
    "It was shown on television last {day}.",
    "The running time is about {minutes} minutes.",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Friday", "Saturday", "Sunday"]
POS_VERDICTS = ["I would recommend it to anyone.", "I loved every minute of it.", "Go and see it.", "A film worth watching twice.", "I enjoyed it a lot.", "Highly recommended."]
NEG_VERDICTS = ["I would not recommend it to anyone.", "I regret watching it.", "Avoid this one.", "A complete waste of time.", "I did not enjoy it at all.", "Not worth your money."]
NEGATED_POS_VERDICTS = ["I can not say I enjoyed it.", "I would never watch it again."]
NEGATED_NEG_VERDICTS = ["I can not say I regret watching it.", "It was never boring for a second."]


def _opinion(rng: np.random.Generator, polarity: int) -> str:
    """One sentence about one aspect with the given polarity (+1/-1), directly or by negation."""
    aspect = rng.choice(ASPECTS)
    negate = rng.random() < 0.3
    words = NEGATIVE if (polarity > 0) == negate else POSITIVE
    adj = rng.choice(words)
    if negate:
        neg = rng.choice(SOFT_NEGATION)
        forms = [f"The {aspect} was {neg} {adj}.", f"I found the {aspect} {neg} {adj}.", f"The {aspect} is {neg} what I would call {adj}."]
    else:
        strong = rng.choice(STRONG) + " " if rng.random() < 0.5 else ""
        forms = [f"The {aspect} was {strong}{adj}.", f"I thought the {aspect} was {strong}{adj}.", f"What {adj} {aspect}!", f"The {aspect} is {strong}{adj} throughout."]
    return str(rng.choice(forms))


def _neutral(rng: np.random.Generator) -> str:
    return str(rng.choice(NEUTRAL)).format(
        day=rng.choice(DAYS), people=rng.choice(PEOPLE), minutes=int(rng.integers(80, 180)), place=rng.choice(PLACES),
        genre=rng.choice(GENRES), year=int(rng.integers(1950, 2020)),
    )


def _lower_first(s: str) -> str:
    return s if s.startswith("I ") else s[0].lower() + s[1:]


def make_review(rng: np.random.Generator) -> tuple[str, str]:
    """(text, label): a few opinions with a majority polarity, neutral remarks, maybe a verdict."""
    label = 1 if rng.random() < 0.5 else -1
    n_op = int(rng.integers(2, 6))
    n_against = int(rng.integers(0, (n_op - 1) // 2 + 1))  # always a strict majority for the label
    polarities = [label] * (n_op - n_against) + [-label] * n_against
    rng.shuffle(polarities)
    sentences = [_opinion(rng, p) for p in polarities]
    if n_against and rng.random() < 0.5:  # a contrast joining an opposing and a majority opinion
        i = polarities.index(-label)
        j = polarities.index(label)
        a, b = sentences[i].rstrip(".!"), sentences[j].rstrip(".!")
        sentences[i] = f"Although {_lower_first(a)}, {_lower_first(b)}."
        del sentences[j]
    for _ in range(int(rng.integers(0, 3))):
        sentences.insert(int(rng.integers(0, len(sentences) + 1)), _neutral(rng))
    if rng.random() < 0.6:
        pos = rng.random() < 0.75
        if label > 0:
            sentences.append(str(rng.choice(POS_VERDICTS if pos else NEGATED_NEG_VERDICTS)))
        else:
            sentences.append(str(rng.choice(NEG_VERDICTS if pos else NEGATED_POS_VERDICTS)))
    if rng.random() < 0.3:
        score = int(rng.integers(7, 11)) if label > 0 else int(rng.integers(1, 5))
        sentences.append(f"{score} out of 10.")
    sentences.insert(0, f"This {rng.choice(GENRES)} {rng.choice(['came out', 'was released', 'appeared'])} in {int(rng.integers(1950, 2020))}.")
    sep = " <br /><br />" if rng.random() < 0.3 else " "
    cut = int(rng.integers(1, len(sentences)))
    text = " ".join(sentences[:cut]) + sep + " ".join(sentences[cut:])
    return text, "positive" if label > 0 else "negative"


def write_imdb_sample(folder: Path, n: int = 500, n_valid: int = 100, seed: int = 0) -> None:
    """Write ``n`` synthetic reviews as ``texts.csv`` in the fastai IMDB_SAMPLE layout (the last ``n_valid`` are validation)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with open(folder / "texts.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["label", "text", "is_valid"])
        for i in range(n):
            text, label = make_review(rng)
            w.writerow([label, text, i >= n - n_valid])
