"""What can be true of an entity: kinds, their attributes, and each attribute's value class.

The schema is the single description every other module reads: fact generation draws
values from an attribute's class, the corpus and tasks phrase an attribute with its
templates (``phrasing.py``), and claim extraction maps a word in free text back to the
attributes it could be a value of. Keeping it declarative means a new attribute is one
entry here plus its phrasing, not edits scattered over the package.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignlab.world import lexicon

KINDS = ["person", "town", "creature", "object"]


@dataclass(frozen=True)
class Attribute:
    """One attribute of one kind of entity.

    ``value_class`` names where values come from (see :func:`values_of_class`);
    ``noun`` is how questions refer to it ("favourite colour"); ``keywords``, when
    set, are words a sentence must contain before a value of this class counts as a
    claim about this attribute (a town name is only a "home" claim next to "lives" or
    "home", not in "Bruk walked to Tamo"); ``symmetric`` marks relations that hold
    both ways (friendship).
    """

    kind: str
    name: str
    value_class: str
    noun: str
    keywords: tuple[str, ...] = ()
    symmetric: bool = False


_NUM_AGE = ("years", "year", "old", "age", "aged")
_HOME = ("lives", "live", "living", "home", "from", "house", "resides")
_FRIEND = ("friend", "friends")
_OWNER = ("belongs", "belong", "owns", "own", "owned", "owner")
_LEGS = ("legs", "leg", "legged")

ATTRIBUTES: list[Attribute] = [
    Attribute("person", "home", "town", "home town", _HOME),
    Attribute("person", "age", "number", "age", _NUM_AGE),
    Attribute("person", "job", "job", "job"),
    Attribute("person", "colour", "colour", "favourite colour"),
    Attribute("person", "food", "food", "favourite food"),
    Attribute("person", "friend", "person", "best friend", _FRIEND, symmetric=True),
    Attribute("town", "region", "region", "region"),
    Attribute("town", "size", "size", "size"),
    Attribute("town", "food", "food", "famous food"),
    Attribute("creature", "colour", "colour", "colour"),
    Attribute("creature", "legs", "number", "number of legs", _LEGS),
    Attribute("creature", "size", "size", "size"),
    Attribute("creature", "home", "town", "home town", _HOME),
    Attribute("creature", "food", "food", "favourite food"),
    Attribute("object", "colour", "colour", "colour"),
    Attribute("object", "size", "size", "size"),
    Attribute("object", "material", "material", "material"),
    Attribute("object", "owner", "person", "owner", _OWNER),
]

ATTRS_BY_KIND: dict[str, list[Attribute]] = {k: [a for a in ATTRIBUTES if a.kind == k] for k in KINDS}
ATTR: dict[tuple[str, str], Attribute] = {(a.kind, a.name): a for a in ATTRIBUTES}

# Closed value classes (the open ones -- town, person, number -- depend on the world).
CLOSED_VALUES: dict[str, list[str]] = {
    "colour": lexicon.COLOURS,
    "food": lexicon.FOODS,
    "size": lexicon.SIZES,
    "region": lexicon.REGIONS,
    "material": lexicon.MATERIALS,
    "job": lexicon.JOBS,
}
# Which numeric attribute a bare number means when a sentence has no keyword.
DEFAULT_NUMBER_ATTR = {"person": "age", "creature": "legs"}


def attribute(kind: str, name: str) -> Attribute:
    return ATTR[(kind, name)]
