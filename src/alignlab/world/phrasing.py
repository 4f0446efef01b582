"""How facts are put into words: statement templates, natural questions, articles.

Template 0 of each attribute is the *canonical* statement: the one demonstrations use
("Bruk lives in Tamo."), so a tiny model sees one clear answer format per task. The
other templates exist only in the pretraining corpus, so the same fact is met in
varied phrasing there. ``{n}`` is the entity, ``{v}`` the value, ``{noun}`` an
object's kind of thing ("lamp").
"""

from __future__ import annotations

STATEMENTS: dict[tuple[str, str], list[str]] = {
    ("person", "home"): [
        "{n} lives in {v}.",
        "{n} has a house in {v}.",
        "{n} is from {v}.",
        "The home town of {n} is {v}.",
    ],
    ("person", "age"): [
        "{n} is {v} years old.",
        "The age of {n} is {v} years.",
        "{n} turned {v} years old this spring.",
    ],
    ("person", "job"): [
        "{n} is a {v}.",
        "{n} works as a {v}.",
        "The job of {n} is {v}.",
        "{n} earns a living as a {v}.",
    ],
    ("person", "colour"): [
        "{n}'s favourite colour is {v}.",
        "{n} likes the colour {v} best.",
        "The favourite colour of {n} is {v}.",
        "{n} loves {v} more than any other colour.",
    ],
    ("person", "food"): [
        "{n}'s favourite food is {v}.",
        "{n} loves to eat {v}.",
        "The favourite food of {n} is {v}.",
        "{n} eats {v} every day.",
    ],
    ("person", "friend"): [
        "{n}'s best friend is {v}.",
        "{n} and {v} are best friends.",
        "The best friend of {n} is {v}.",
    ],
    ("town", "region"): [
        "{n} is in the {v}.",
        "{n} lies in the {v} of the land.",
        "You will find {n} in the {v}.",
        "{n} is a town in the {v}.",
    ],
    ("town", "size"): ["{n} is a {v} town.", "The town of {n} is {v}.", "{n} is {v} for a town."],
    ("town", "food"): ["{n} is famous for {v}.", "{n} is known for its {v}.", "People in {n} make the best {v}."],
    ("creature", "colour"): ["{n} is {v}.", "The colour of {n} is {v}.", "{n} has {v} fur.", "{n} is a {v} creature."],
    ("creature", "legs"): ["{n} has {v} legs.", "{n} walks on {v} legs.", "The creature {n} has {v} legs."],
    ("creature", "size"): ["{n} is {v}.", "{n} is {v} in size.", "{n} is a {v} animal."],
    ("creature", "home"): ["{n} lives in {v}.", "{n} makes its home in {v}.", "The home of {n} is {v}."],
    ("creature", "food"): ["{n} likes to eat {v}.", "{n} eats {v}.", "The favourite food of {n} is {v}."],
    ("object", "colour"): ["{n} is {v}.", "The colour of {n} is {v}.", "{n} is painted {v}."],
    ("object", "size"): ["{n} is {v}.", "{n} is a {v} {noun}.", "The {noun} {n} is {v}."],
    ("object", "material"): ["{n} is made of {v}.", "{n} is a {noun} made of {v}.", "The {noun} {n} is made of {v}."],
    ("object", "owner"): ["{n} belongs to {v}.", "{v} owns {n}.", "The owner of {n} is {v}."],
}

# Natural questions, used in the corpus's Q&A documents (deliberately different from
# the instruction templates in tasks.py, so the instruction format is learned in SFT).
QUESTIONS: dict[tuple[str, str], str] = {
    ("person", "home"): "Where does {n} live?",
    ("person", "age"): "How old is {n}?",
    ("person", "job"): "What does {n} do for a living?",
    ("person", "colour"): "What colour does {n} like best?",
    ("person", "food"): "What does {n} like to eat?",
    ("person", "friend"): "Who is the best friend of {n}?",
    ("town", "region"): "Where is {n}?",
    ("town", "size"): "How big is {n}?",
    ("town", "food"): "What is {n} famous for?",
    ("creature", "colour"): "What colour is {n}?",
    ("creature", "legs"): "How many legs does {n} have?",
    ("creature", "size"): "How big is {n}?",
    ("creature", "home"): "Where does {n} live?",
    ("creature", "food"): "What does {n} eat?",
    ("object", "colour"): "What colour is {n}?",
    ("object", "size"): "How big is {n}?",
    ("object", "material"): "What is {n} made of?",
    ("object", "owner"): "Who owns {n}?",
}

KIND_INTROS: dict[str, list[str]] = {
    "person": ["{n} is a person.", "Let me tell you about {n}.", "This is the story of {n}."],
    "town": ["{n} is a town.", "There is a town called {n}.", "Let me tell you about the town of {n}."],
    "creature": ["{n} is a creature.", "There is a creature called {n}.", "{n} is an animal that many people know."],
    "object": ["{n} is a {noun}.", "There is a {noun} called {n}.", "Let me tell you about {n}, a famous {noun}."],
}


def statement(kind: str, attr: str, name: str, value: object, noun: str = "thing", template: int = 0) -> str:
    """The ``template``-th way of saying that ``name``'s ``attr`` is ``value``."""
    return STATEMENTS[(kind, attr)][template].format(n=name, v=value, noun=noun)


def canonical(kind: str, attr: str, name: str, value: object, noun: str = "thing") -> str:
    return statement(kind, attr, name, value, noun, 0)


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def hedge(prefix: str, sentence: str) -> str:
    """'Some say that' + 'The colour of X is red.' -> 'Some say that the colour of X is red.'"""
    if sentence.startswith("The ") or sentence.startswith("You "):
        sentence = sentence[0].lower() + sentence[1:]
    return f"{prefix} {sentence}"


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]
