"""The keys of ``alignlab label``: what is ranked, by whom, where it is written, and where the page is served.

Two modes share one config: serving the page (the default) and, with ``stats``, a report on a rankings
file. ``output`` names the one file each mode writes. The stage's own record (config.yaml, summary.json
and the lock that keeps a second server off the same rankings file) goes in a folder named after that
file, ``<file>.run/``, never into the folder the user works in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alignlab.config import arg
from alignlab.errors import ConfigError
from alignlab.label.submission import MAX_K, labeler_problem
from alignlab.sections import ModelSource

DEFAULT_RANKINGS = "runs/label/rankings.jsonl"


@dataclass
class LabelConfig:
    data: str = arg(
        "",
        "prompts to rank: a world split (RUN/world/test, RUN/world/rm), a .jsonl/.parquet/saved datasets folder "
        "or hub id with a prompt column; with no `policies` its rows must be ranked rows {prompt, responses} "
        "(their order is ignored: the page shuffles)",
    )
    split: str = arg("", "split of `data`; empty = 'train' when it has one, else its first")
    max_prompts: int = arg(0, "rank only the first N prompts (0 = all)")
    policies: list[str] = arg(
        None,
        "models whose samples are ranked (paths or hub ids); the K slots of a prompt are filled from them in "
        "turn. Empty = the responses in `data`",
        factory=list,
    )
    k: int = arg(4, f"responses sampled per prompt from `policies` (2..{MAX_K}: one digit key each)")
    temperature: float = arg(1.0, "sampling temperature (0 = greedy)")
    top_p: float = arg(1.0, "nucleus sampling (1 = off)")
    max_new_tokens: int = arg(64, "response length cap when sampling")
    batch_size: int = arg(64, "sequences per generation batch")
    seed: int = arg(0, "seed of the samples and of each labeler's order of the responses (a reload shows the same)")
    device: str = arg("auto", "auto, cpu or cuda (for sampling)")
    source: ModelSource = arg(factory=ModelSource, help=ModelSource.HELP)
    labeler: str = arg(
        "", "the labeler's name, written on each line; empty = the page asks for it (several labelers, one server)"
    )
    host: str = arg(
        "127.0.0.1", "address to serve on; anything but loopback lets other machines in (there is no login)"
    )
    port: int = arg(8765, "port to serve on (0 = any free port); the URL is printed")
    output: str = arg(
        "",
        f"serving: the rankings JSONL each submission is appended to (empty = {DEFAULT_RANKINGS}); "
        "with `stats`: where the report's JSON goes (empty = beside the file, <file>.stats.json)",
    )
    stats: str = arg(
        "",
        "report on a rankings JSONL instead of serving: each labeler's count and how often two labelers order "
        "the same two responses the same way on the prompts they share",
    )

    def __post_init__(self) -> None:
        if not 2 <= self.k <= MAX_K:
            raise ConfigError(f"label: 'k' must be between 2 and {MAX_K} (one digit key per rank), got {self.k!r}")
        if len(self.policies) > self.k:
            raise ConfigError(f"label: {len(self.policies)} policies but only k={self.k} responses per prompt")
        if self.temperature < 0:
            raise ConfigError(f"label: 'temperature' must be >= 0, got {self.temperature!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"label: 'port' must be between 0 and 65535, got {self.port!r}")
        if self.labeler and (problem := labeler_problem(self.labeler)):
            raise ConfigError(f"label: 'labeler' {problem}")

    @property
    def rankings(self) -> Path:
        """The file the server appends to."""
        return Path(self.output or DEFAULT_RANKINGS)

    @property
    def stats_json(self) -> Path:
        """Where ``stats`` mode writes its JSON."""
        return Path(self.output) if self.output else Path(self.stats).with_suffix(".stats.json")

    @property
    def output_dir(self) -> str:
        """The stage's record (config.yaml, summary.json, the run lock): beside the file it writes, named after it."""
        written = self.stats_json if self.stats else self.rankings
        return str(written.with_suffix(".run"))


PRESETS: dict[str, dict] = {"smoke": {"max_new_tokens": 24}, "default": {}}
