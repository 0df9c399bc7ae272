"""The words demo rows are made of: comment text, people, site names, sections and reactions.

One vocabulary for the demo generator and the simulated writer alike. The builders draw from
the ``random.Random`` they are given, in a fixed order, so a seeded generator stays
deterministic.
"""

from __future__ import annotations

import random

__all__ = [
    "ESSENTIAL_REACTIONS",
    "FIRST_NAMES",
    "LAST_NAMES",
    "REACTIONS",
    "SECTIONS",
    "SITE_NAMES",
    "WORDS",
    "paragraph",
    "person",
]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


WORDS = _words(
    "the a this that great post article thanks really nice agree disagree interesting point "
    "think about static site comments reactions kotomi hugo jekyll astro deploy docker sqlite "
    "backup question answer why how when where maybe never always works broken fixed update "
    "version release feature bug issue idea love useful clear wrong right example code snippet "
    "link read more later again first second last time today week learned something new "
    "helpful please could would should explain detail performance privacy self hosted simple "
    "small fast cache theme layout markdown footnote typo image table server config"
)
FIRST_NAMES = _words(
    "Ana Bruno Chen Dana Emeka Fatima Goro Hana Ivan Jun Kira Lena Mateo Nia Omar Priya Quinn "
    "Rosa Sven Tariq Uma Viktor Wen Ximena Yusuf Zoe Aiko Bilal Carla Dmitri"
)
LAST_NAMES = _words(
    "Abe Brown Costa Diaz Eze Fischer Garcia Haddad Ito Jensen Kim Lopez Mehta Novak Okafor "
    "Petrov Quispe Rossi Sato Tanaka Ueda Varga Weber Xu Yilmaz Zhang"
)
SECTIONS: tuple[str, ...] = ("blog", "posts", "notes", "til", "docs", "guides", "news")
SITE_NAMES: tuple[tuple[str, str], ...] = (
    ("Field Notes", "fieldnotes"),
    ("Static Thoughts", "staticthoughts"),
    ("The Build Log", "buildlog"),
    ("Quiet Corner", "quietcorner"),
    ("Open Drafts", "opendrafts"),
)
"""(site name, slug for its domain)."""
REACTIONS: tuple[tuple[str, str, str], ...] = (
    ("like", "👍", "both"),
    ("love", "❤️", "comment"),
    ("laugh", "😂", "comment"),
    ("insightful", "💡", "comment"),
    ("clap", "👏", "page"),
    ("bookmark", "🔖", "page"),
    ("fire", "🔥", "both"),
)
"""(name, emoji, reaction_type) a site may allow."""
ESSENTIAL_REACTIONS: tuple[str, ...] = ("like", "love", "clap")
"""Allowed on every site: together they cover pages and comments."""


def paragraph(rng: random.Random, low: int, high: int) -> str:
    """Between ``low`` and ``high`` sentences of 4 to 24 words, like a comment's text."""
    sentences = []
    for _ in range(rng.randint(low, high)):
        words = rng.choices(WORDS, k=rng.randint(4, 24))
        sentences.append(" ".join(words).capitalize() + rng.choice(".....!?"))
    return " ".join(sentences)


def person(rng: random.Random) -> tuple[str, str]:
    """A full name and an e-mail address made from it."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return f"{first} {last}", f"{first.lower()}.{last.lower()}{rng.randrange(1000)}@example.com"
