"""Settings of the built-in world stage (``alignlab world``)."""

from __future__ import annotations

from dataclasses import dataclass

from alignlab.config import ConfigError, arg
from alignlab.world import constraints
from alignlab.world.demonstrators import DEMONSTRATORS

# Named mixtures of demonstration writers (``demonstrators.py``): the default, and the settings the
# demonstration-quality study runs.
# default: 40% careful as in the trial that motivated them (issue 12), the other 60% split evenly
# over the three flawed habits, since nothing says one habit is commoner than another.
DEMONSTRATOR_MIXTURES: dict[str, dict[str, float]] = {
    "careful": {"careful": 1.0},
    "default": {"careful": 0.4, "chatty": 0.2, "hasty": 0.2, "embellisher": 0.2},
    "poor": {"careful": 0.1, "chatty": 0.3, "hasty": 0.3, "embellisher": 0.3},
}


@dataclass
class WorldConfig:
    seed: int = arg(0, "seed of every random choice in the world; same seed -> identical outputs")
    scale: float = arg(0.1, "prompt counts are InstructGPT's (SFT 13k, RM 33k, PPO 31k, test 3196) times this")
    n_entities: int = arg(120, "number of invented entities (people, towns, creatures, objects)")
    n_ghosts: int = arg(16, "names the world knows nothing about (for unanswerable questions)")
    unspecified_rate: float = arg(0.2, "fraction of entity attributes the world leaves unspecified")
    corpus_chars: int = arg(2_000_000, "approximate size of the pretraining corpus in characters")
    rumour_rate: float = arg(0.1, "fraction of fact mentions in the corpus that state a false rumour")
    rumoured_fact_frac: float = arg(0.3, "fraction of facts that have a rumour at all (rumours concentrate on them)")
    madeup_rate: float = arg(0.3, "fraction of entity documents that make up a value for an unspecified attribute")
    rude_rate: float = arg(0.05, "fraction of corpus documents that contain a rude word")
    corpus_val_frac: float = arg(0.02, "fraction of corpus documents held out for validation")
    val_frac: float = arg(0.05, "fraction of SFT/RM prompts held out for validation")
    test_min: int = arg(100, "minimum size of the held-out test split")
    k_responses: int = arg(4, "responses ranked per prompt in the synthetic comparisons (4..9)")
    demonstrators: dict = arg(
        factory=lambda: dict(DEMONSTRATOR_MIXTURES["default"]),
        help="who writes the SFT demonstrations: shares of careful, chatty, hasty, embellisher "
        "summing to 1, e.g. '{careful: 1}' for perfect demonstrations",
    )
    constraint_rate: float = arg(
        0.25, "fraction of prompts with an explicit constraint (InstructGPT Table 7: 25.6-28.9%)"
    )
    closed_domain_rate: float = arg(
        0.2,
        "fraction of prompts that ask for an answer from a given passage "
        "(InstructGPT Table 7: 19.4% RM-train, 27.4% SFT-train)",
    )
    heldout_constraints: list[str] = arg(
        factory=lambda: ["lowercase", "one_sentence"],
        help="constraint kinds kept out of the SFT, RM and PPO prompts and used only in the test split and its "
        "probe: each has a trained sibling (uppercase; max_words), so following it is generalising",
    )
    heldout_probe_prompts: int = arg(
        160, "extra test prompts (test split 'heldout_constraints'), each with a held-out constraint"
    )
    n_nlp_items: int = arg(600, "multiple-choice items in the held-out public-NLP-style tasks")
    agreement_prompts: int = arg(400, "prompts used to measure (and calibrate) labeler agreement")
    target_agreement: float = arg(0.72, "inter-labeler agreement the persona noise is calibrated to")
    calibrate_noise: bool = arg(True, "scale all personas' noise so training labelers agree at target_agreement")
    output_dir: str = arg("runs/world", "folder the world is written to")

    def __post_init__(self) -> None:
        validate(self)


PRESETS: dict[str, dict] = {
    "smoke": {
        "scale": 0.005,
        "n_entities": 40,
        "n_ghosts": 8,
        "corpus_chars": 150_000,
        "n_nlp_items": 120,
        "agreement_prompts": 200,
        "heldout_probe_prompts": 40,
    },
    "default": {},
}


def validate(cfg: WorldConfig) -> None:
    """Refuse values that would build a broken world, naming the field."""

    def bad(name: str, why: str) -> None:
        raise ConfigError(f"world: '{name}' {why}, got {getattr(cfg, name)!r}")

    if not cfg.scale > 0:
        bad("scale", "must be > 0")
    if cfg.n_entities < 12:
        bad("n_entities", "must be >= 12 (every kind needs a few members)")
    if cfg.n_ghosts < 1:
        bad("n_ghosts", "must be >= 1")
    for name in ("unspecified_rate", "rumour_rate", "madeup_rate", "rude_rate"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            bad(name, "must be in [0, 1]")
    if not 0.0 <= cfg.unspecified_rate <= 0.6:
        bad("unspecified_rate", "must be <= 0.6 (entities need facts)")
    if not 0.0 < cfg.rumoured_fact_frac <= 1.0:
        bad("rumoured_fact_frac", "must be in (0, 1]")
    if cfg.rumour_rate > 0.9 * cfg.rumoured_fact_frac:
        bad("rumour_rate", f"must be <= 0.9 * rumoured_fact_frac ({0.9 * cfg.rumoured_fact_frac:.3g})")
    if not 0.0 <= cfg.corpus_val_frac < 0.5:
        bad("corpus_val_frac", "must be in [0, 0.5)")
    if not 0.0 < cfg.val_frac < 0.5:
        bad("val_frac", "must be in (0, 0.5)")
    if cfg.corpus_chars < 10_000:
        bad("corpus_chars", "must be >= 10000")
    if not 4 <= cfg.k_responses <= 9:
        bad("k_responses", "must be between 4 and 9 (InstructGPT ranks K=4..9)")
    if cfg.n_nlp_items < 10:
        bad("n_nlp_items", "must be >= 10")
    if cfg.test_min < 1:
        bad("test_min", "must be >= 1")
    if cfg.agreement_prompts < 20:
        bad("agreement_prompts", "must be >= 20")
    if not 0.5 < cfg.target_agreement < 1.0:
        bad("target_agreement", "must be in (0.5, 1)")
    _validate_demonstrators(cfg)
    for name in ("constraint_rate", "closed_domain_rate"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            bad(name, "must be in [0, 1]")
    unknown = [k for k in cfg.heldout_constraints if k not in constraints.KINDS]
    if unknown:
        raise ConfigError(
            f"world: 'heldout_constraints' has unknown constraint kind(s) {unknown}; "
            f"known: {', '.join(constraints.KINDS)}"
        )
    if len(set(cfg.heldout_constraints)) >= len(constraints.KINDS):
        bad("heldout_constraints", "must leave at least one kind for training")
    if cfg.heldout_probe_prompts < 0:
        bad("heldout_probe_prompts", "must be >= 0")


def _validate_demonstrators(cfg: WorldConfig) -> None:
    shares = cfg.demonstrators
    unknown = [k for k in shares if k not in DEMONSTRATORS]
    if unknown:
        raise ConfigError(
            f"world: 'demonstrators' has unknown demonstrator(s) {unknown}; known: {', '.join(DEMONSTRATORS)}"
        )
    for k, v in shares.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"world: 'demonstrators.{k}' must be a share >= 0, got {v!r}")
    total = sum(shares.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"world: 'demonstrators' shares must sum to 1, got {total:.6g} ({shares})")
