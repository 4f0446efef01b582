"""The World: the facts, the labelers and (after a build) the generated data.

A plain container. Facts are dicts so that ``world.json`` is a direct dump of them and
``load_world`` rebuilds the same object without regenerating anything. The generated
datasets (``data``) and statistics live on the object after :func:`build_world` but are
not part of ``world.json``; they are written as Hugging Face datasets beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignlab.errors import DataError

WORLD_FORMAT = 1  # bump when world.json changes incompatibly


@dataclass
class World:
    """Everything the labelers need to judge a response, plus the build's outputs.

    entities:  [{"name", "kind", "noun", "attrs": {attr: value | None}, "ghost": bool}]
               ``None`` = the world leaves it unspecified (asking is unanswerable).
               Ghost entities are names the world knows nothing about at all.
    rumours:   {name: {attr: false value}} the corpus repeats for some facts.
    bystanders: names used only inside extraction sentences (not entities, so an
               extraction answer never reads as a claim about the world).
    personas:  [{"name", "weights": {component: w}, "tau", "heldout"}]
    """

    seed: int
    config: dict[str, Any]
    entities: list[dict[str, Any]]
    rumours: dict[str, dict[str, Any]]
    bystanders: list[str]
    personas: list[dict[str, Any]]
    noise_scale: float = 1.0
    data: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict, repr=False)
    stats: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.by_name: dict[str, dict[str, Any]] = {e["name"].lower(): e for e in self.entities}

    # -- lookups ---------------------------------------------------------------
    def entity(self, name: str) -> dict[str, Any] | None:
        return self.by_name.get(name.lower())

    def real_entities(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.entities if not e["ghost"] and (kind is None or e["kind"] == kind)]

    def ghosts(self) -> list[dict[str, Any]]:
        return [e for e in self.entities if e["ghost"]]

    def names(self, kind: str) -> list[str]:
        return [e["name"] for e in self.real_entities(kind)]

    def persona(self, name: str) -> dict[str, Any]:
        for p in self.personas:
            if p["name"] == name:
                return p
        raise KeyError(f"no persona named {name!r}; known: {[p['name'] for p in self.personas]}")

    def training_personas(self) -> list[dict[str, Any]]:
        return [p for p in self.personas if not p["heldout"]]

    def heldout_personas(self) -> list[dict[str, Any]]:
        return [p for p in self.personas if p["heldout"]]

    # -- serialisation ---------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": WORLD_FORMAT,
            "seed": self.seed,
            "config": self.config,
            "entities": self.entities,
            "rumours": self.rumours,
            "bystanders": self.bystanders,
            "personas": self.personas,
            "noise_scale": self.noise_scale,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> World:
        if data.get("format") != WORLD_FORMAT:
            raise DataError(f"world.json format {data.get('format')!r} is not {WORLD_FORMAT}; rebuild the world")
        return cls(
            seed=data["seed"],
            config=data["config"],
            entities=data["entities"],
            rumours=data["rumours"],
            bystanders=data["bystanders"],
            personas=data["personas"],
            noise_scale=data.get("noise_scale", 1.0),
        )
