"""Stage: sample K answers per prompt from the SFT model and have labelers rank them (InstructGPT step 2, data).

For every RM prompt the SFT policy samples K responses (batched, KV-cache generation,
temperature 1 by default); one TRAINING labeler, drawn per prompt from a seeded stream,
ranks them best -> worst (``world.rank_responses``: the persona's noisy Plackett-Luce
ranking). The validation split is also ranked, independently, by one HELD-OUT labeler
(``responses_heldout``/``labeler_heldout``): same responses, a persona who produced no
training data, so the reward model can be scored against labelers it never saw.

Written to ``output_dir``:

    comparisons/  DatasetDict train, validation -- the ranked format:
                  prompt, responses (best -> worst), labeler, gold (noise-free gold reward of
                  each response, same order), meta, cluster, task, template; validation also
                  responses_heldout, labeler_heldout
    pairs/        DatasetDict train, validation -- prompt, chosen, rejected (all C(K,2) pairs)

Duplicates: two samples can be the same string (short answers often are). They are KEPT:
they are real samples, and how often the policy repeats itself is part of the data. The
persona gives identical strings one shared noise draw, so copies sit next to each other
in the ranking. They carry no preference: the pairs expansion skips identical pairs
(``ranking_pairs``), and the reward stage collapses each list to its distinct responses
(first copy keeps its place) before the ranking loss, which is the same as dropping the
tied pairs; a prompt whose K samples are all identical contributes nothing.

Several policies: InstructGPT's labelers ranked outputs of several models (SFT, PPO and
earlier models), not of one. ``policies`` lists extra sources as ``path`` or
``path@temperature``; the K slots of every prompt are filled from the sources in turn
(slot j from source j mod n, where source 0 is ``policy`` at ``temperature``), and each row
records which source wrote each response (``sources``: the index of the first entry with
the same path and temperature, so listing the policy twice gives it more slots under one
id). A single tiny SFT policy is wrong
on most prompts, so most of its pairs tie on gold and the labels are coin flips; mixing in
other policies (e.g. the SFT policy at a low temperature, or the base model) gives pairs
that differ in quality, which is what a reward model can learn from.

Users with their own comparisons skip this stage: the reward stage reads prompt/chosen/
rejected or prompt/responses data directly.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignlab.config import arg
from alignlab.data.heldout import (
    DEFAULT_EVAL_FRACTION,
    EVAL_FRACTION_HELP,
    HeldoutInfo,
    load_train_eval,
    no_eval_message,
)
from alignlab.errors import ConfigError, DataError
from alignlab.evaluate.judges import world_records_ok
from alignlab.models.load import load_policy
from alignlab.outputs import atomic_replace_dir, atomic_write_text
from alignlab.rollout.k_samples import interleave, sample_n, slots_per_source
from alignlab.sections import ModelSource
from alignlab.training import resolve_device
from alignlab.world import gold_reward, load_world, rank_responses, ranking_pairs

K_RANGE = (4, 9)


@dataclass
class CompareConfig:
    policy: str = arg("runs/sft", "the SFT model that writes the K responses (hub id or local path)")
    data: str = arg("runs/world/rm", "RM prompts of the built-in world (rows need prompt, task, meta)")
    world_dir: str = arg("runs/world", "the built-in world whose labelers rank the responses")
    train_split: str = arg("train", "split of prompts for the reward model's training comparisons")
    eval_split: str = arg("validation", "split of held-out prompts (also ranked by a held-out labeler)")
    eval_fraction: float = arg(DEFAULT_EVAL_FRACTION, EVAL_FRACTION_HELP)
    k: int = arg(4, "responses sampled and ranked per prompt (InstructGPT: 4..9)")
    max_prompts: int = arg(0, "use at most this many training prompts, a seeded subset (0 = all)")
    max_eval_prompts: int = arg(0, "use at most this many held-out prompts (0 = all)")
    temperature: float = arg(1.0, "sampling temperature of `policy` (InstructGPT samples at 1)")
    policies: list[str] = arg(
        None,
        "extra sources of responses, 'path' or 'path@temperature' (default: "
        "`temperature`); the K slots of a prompt are filled from [policy, *policies] in turn. "
        "'@T' alone means `policy` at temperature T",
        factory=list,
    )
    top_p: float = arg(1.0, "nucleus sampling (1 = off)")
    max_new_tokens: int = arg(32, "response length cap")
    batch_size: int = arg(256, "sequences per generation batch")
    chunk_prompts: int = arg(256, "prompts generated per progress-bar step (each chunk has its own seed)")
    device: str = arg("auto", "auto, cpu or cuda")
    seed: int = arg(0, "seed for the prompt subset, sampling and the labelers")
    source: ModelSource = arg(factory=ModelSource, help=ModelSource.HELP)
    output_dir: str = arg("runs/compare", "where comparisons/ and pairs/ are written")

    def __post_init__(self) -> None:
        if self.train_split == self.eval_split:
            raise ConfigError(
                f"compare: 'train_split' and 'eval_split' are both {self.train_split!r}; they name the two "
                "splits written, and the held-out prompts must not be trained on"
            )
        lo, hi = K_RANGE
        if not lo <= self.k <= hi:
            raise ConfigError(
                f"compare: 'k' must be between {lo} and {hi} (InstructGPT ranks K=4..9 responses "
                f"per prompt), got {self.k!r}"
            )
        if self.temperature < 0:
            raise ConfigError(f"compare: 'temperature' must be >= 0, got {self.temperature!r}")
        for i, spec in enumerate(self.policies):
            parse_source(spec, self.policy, self.temperature, f"compare: 'policies[{i}]'")
        if len(self.policies) + 1 > self.k:
            raise ConfigError(f"compare: {len(self.policies) + 1} sources but only k={self.k} slots per prompt")


def parse_source(spec: str, policy: str, temperature: float, where: str = "compare") -> tuple[str, float]:
    """'path', 'path@T' or '@T' (= the main policy at T) -> (path, temperature)."""
    path, _, temp = str(spec).rpartition("@") if "@" in str(spec) else (str(spec), "", "")
    path = path or policy
    try:
        t = float(temp) if temp else temperature
    except ValueError:
        raise ConfigError(
            f"{where}: {spec!r} is not 'path' or 'path@temperature' (temperature {temp!r} is not a number)"
        ) from None
    if t < 0:
        raise ConfigError(f"{where}: temperature in {spec!r} must be >= 0")
    if not path:
        raise ConfigError(f"{where}: empty model path in {spec!r}")
    return path, t


PRESETS = {
    "smoke": {"max_new_tokens": 24, "batch_size": 128, "chunk_prompts": 64},
    # A seeded subset of the world's RM prompts: sampling and labelling cost grows with every prompt,
    # and past a couple of thousand the reward model's held-out accuracy stops rising.
    # K=6: the pipeline fills 4 slots from the SFT policy and 2 from the base model (see its wiring); the
    # SFT policy alone ties many of its pairs on gold, and a tied pair teaches the reward model a coin flip.
    "default": {"max_prompts": 2000, "k": 6},
}


def _subset(n: int, limit: int, seed: int) -> list[int]:
    if not limit or limit >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:limit].tolist())


def rank_split(
    world,
    records: list[dict],
    samples: list[list[str]],
    seed: str,
    heldout: bool,
    sources: list[list[int]] | None = None,
) -> list[dict[str, Any]]:
    """Ranked rows: one training persona per prompt (seeded), plus a held-out persona if asked."""
    rng = random.Random(f"{seed}-labelers")
    rng_h = random.Random(f"{seed}-heldout-labelers")
    train_personas, heldout_personas = world.training_personas(), world.heldout_personas()
    rows = []
    for p, (rec, responses) in enumerate(zip(records, samples)):
        persona = rng.choice(train_personas)
        order = rank_responses(world, persona, rec, responses, rng)
        ranked = [responses[i] for i in order]
        row = {
            "prompt": rec["prompt"],
            "responses": ranked,
            "labeler": persona["name"],
            "gold": [round(gold_reward(world, rec, r), 6) for r in ranked],
            "meta": rec["meta"],
            "cluster": rec.get("cluster", ""),
            "task": rec.get("task", ""),
            "template": rec.get("template", -1),
        }
        if sources is not None:
            row["sources"] = [sources[p][i] for i in order]  # which source wrote each ranked response
        if heldout:
            ph = rng_h.choice(heldout_personas)
            row["responses_heldout"] = [responses[i] for i in rank_responses(world, ph, rec, responses, rng_h)]
            row["labeler_heldout"] = ph["name"]
        rows.append(row)
    return rows


def pairs_dataset(rows: list[dict]):
    """The (chosen, rejected) expansion of ranked rows; identical strings give no pair."""
    import datasets

    cols: dict[str, list[str]] = {"prompt": [], "chosen": [], "rejected": []}
    for r in rows:
        for chosen, rejected in ranking_pairs(r["responses"]):
            cols["prompt"].append(r["prompt"])
            cols["chosen"].append(chosen)
            cols["rejected"].append(rejected)
    return datasets.Dataset.from_dict(cols, features=datasets.Features({k: datasets.Value("string") for k in cols}))


def _load_policy(cfg: CompareConfig, path: str, device: str):
    return load_policy(path, cfg.source.tokenizer, cfg.source.trust_remote_code, device)


def _gold_tie_share(rows: list[dict]) -> float:
    """Share of distinct-response pairs whose two responses have the same gold reward (coin flips for labelers)."""
    tied = total = 0
    for r in rows:
        golds = list(dict(zip(r["responses"], r["gold"])).values())  # one gold per distinct string
        for i in range(len(golds)):
            for j in range(i + 1, len(golds)):
                total += 1
                tied += abs(golds[i] - golds[j]) < 1e-9
    return tied / max(total, 1)


def _source_stats(rows: list[dict], sources: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """Per source: mean gold of its responses and how often the labeler ranked it first."""
    out = []
    for j, (path, temp) in enumerate(sources):
        if sources.index((path, temp)) != j:
            continue
        golds = [g for r in rows for g, s in zip(r["gold"], r["sources"]) if s == j]
        firsts = sum(r["sources"][0] == j for r in rows)
        out.append(
            {
                "source": f"{path}@{temp:g}",
                "responses": len(golds),
                "mean_gold": round(sum(golds) / max(len(golds), 1), 4),
                "ranked_first": round(firsts / max(len(rows), 1), 4),
            }
        )
    return out


def run(cfg: CompareConfig) -> dict:
    """Sampling and labelling run in one process. Under `accelerate launch` rank 0 does all of it and
    the other ranks wait (sampling K answers is cheap next to training; sharding it would also
    change which labeler the seeded stream gives each prompt)."""
    from accelerate import PartialState

    state = PartialState(cpu=resolve_device(cfg.device) == "cpu")
    if state.num_processes > 1 and state.is_main_process:
        print(
            f"compare: {state.num_processes} processes launched; sampling and labelling run on rank 0, the others wait"
        )
    summary = _run(cfg) if state.is_main_process else {}
    state.wait_for_everyone()
    return summary


@dataclass
class Job:
    """One split's prompts to sample and rank."""

    split: str
    index: int  # 0 = training, 1 = held-out: offsets the split's seeds
    records: list[dict]
    of_prompts: int  # rows of the split before the subset


def _jobs(cfg: CompareConfig, world) -> tuple[list[Job], HeldoutInfo]:
    """The training and held-out prompts (``data/heldout.py``: never the same prompts), each a seeded subset."""
    if not world.heldout_personas():
        raise DataError(f"{cfg.world_dir}: the world has no held-out labelers")
    data = load_train_eval(cfg.data, cfg.train_split, cfg.eval_split, cfg.eval_fraction)
    if data.eval is None:  # the reward model's held-out accuracy is measured on these prompts
        raise DataError(no_eval_message("compare", cfg.data, data.info))
    jobs = []
    sides = ((cfg.train_split, data.train, cfg.max_prompts), (cfg.eval_split, data.eval, cfg.max_eval_prompts))
    for s_i, (split, ds, limit) in enumerate(sides):
        if not world_records_ok(ds):
            raise DataError(
                f"{cfg.data} ({split} split): the labelers need the world's prompt/task/meta columns "
                f"(got {ds.column_names}); bring your own comparisons straight to the reward stage instead"
            )
        idx = _subset(len(ds), limit, cfg.seed + s_i)
        jobs.append(Job(split, s_i, [ds[i] for i in idx], len(ds)))
    return jobs, data.info


def _sample_all(cfg: CompareConfig, jobs: list[Job], sources, slots, device: str):
    """Per split: [source][prompt][sample] responses and each source's EOS rate. One model in memory
    at a time; source 0 keeps the seeds a single-source run had."""
    per_source: dict[str, list] = {job.split: [] for job in jobs}
    eos: dict[str, list[float]] = {job.split: [] for job in jobs}
    for j, ((path, temp), n) in enumerate(zip(sources, slots)):
        model, tok = _load_policy(cfg, path, device)
        for job in jobs:
            samples, eos_rate = sample_n(
                model,
                tok,
                [r["prompt"] for r in job.records],
                n,
                temperature=temp,
                top_p=cfg.top_p,
                max_new_tokens=cfg.max_new_tokens,
                batch_size=cfg.batch_size,
                chunk_prompts=cfg.chunk_prompts,
                seed=cfg.seed * 10 + job.index + 1000 * j,
                desc=f"compare {job.split}" + (f" [{j}: {Path(path).name}@{temp:g}]" if len(sources) > 1 else ""),
            )
            per_source[job.split].append(samples)
            eos[job.split].append(eos_rate)
        del model
    return per_source, eos


def _split_stats(cfg: CompareConfig, rows: list[dict], job: Job, eos_rates, slots, sources) -> dict[str, Any]:
    distinct = [len(set(r["responses"])) for r in rows]
    golds = [g for r in rows for g in r["gold"]]
    stats = {
        "prompts": len(rows),
        "of_prompts": job.of_prompts,
        "pairs": sum(len(ranking_pairs(r["responses"])) for r in rows),
        "pairs_tied_on_gold": round(_gold_tie_share(rows), 4),
        "mean_distinct_responses": round(sum(distinct) / len(distinct), 3),
        "all_identical_prompts": sum(d == 1 for d in distinct),
        "eos_rate": round(sum(e * n for e, n in zip(eos_rates, slots)) / cfg.k, 4),
        "mean_gold_of_samples": round(sum(golds) / len(golds), 4),
        "labelers": dict(sorted(Counter(r["labeler"] for r in rows).items())),
    }
    if len(sources) > 1:
        stats["sources"] = _source_stats(rows, sources)
    if job.split == cfg.eval_split:
        stats["heldout_labelers"] = dict(sorted(Counter(r["labeler_heldout"] for r in rows).items()))
    return stats


def _write_datasets(out: Path, splits: dict[str, list[dict]]) -> None:
    """comparisons/ and pairs/, each written whole and then swapped into place."""
    import datasets

    out.mkdir(parents=True, exist_ok=True)
    bars = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        ranked = datasets.DatasetDict({s: datasets.Dataset.from_list(rows) for s, rows in splits.items()})
        pairs = datasets.DatasetDict({s: pairs_dataset(rows) for s, rows in splits.items()})
        for name, dd in (("comparisons", ranked), ("pairs", pairs)):
            tmp = out / f".{name}.tmp"
            dd.save_to_disk(str(tmp))
            atomic_replace_dir(tmp, out / name)
    finally:
        if bars:
            datasets.enable_progress_bars()


def _write_readme(out: Path, cfg: CompareConfig, sources, slots, summary: dict[str, Any]) -> None:
    load_ranked = f"ranked = datasets.load_from_disk('{(out / 'comparisons').as_posix()}')"
    load_pairs = f"pairs = datasets.load_from_disk('{(out / 'pairs').as_posix()}')"
    lines = [
        "# alignlab compare output (data, not a model)",
        "",
        "```python",
        "import datasets",
        f"{load_ranked}  # prompt, responses (best -> worst), labeler, ...",
        f"{load_pairs}  # prompt, chosen, rejected",
        "```",
        "",
        f"K={cfg.k} samples per prompt from "
        + ", ".join(f"`{p}` at temperature {t:g} ({n})" for (p, t), n in zip(sources, slots))
        + ", ranked by one training "
        "labeler each; validation also by a held-out labeler (`responses_heldout`). Identical samples are kept and "
        "carry no preference (see alignlab/stages/compare.py).",
        "",
        *[f"- **{k}**: {v}" for k, v in summary.items() if not isinstance(v, dict)],
        "",
    ]
    atomic_write_text(out / "README.md", "\n".join(lines))


def _run(cfg: CompareConfig) -> dict:
    t_start = time.time()
    out = Path(cfg.output_dir)
    world = load_world(cfg.world_dir)
    sources = [(cfg.policy, cfg.temperature)] + [parse_source(x, cfg.policy, cfg.temperature) for x in cfg.policies]
    slots = slots_per_source(cfg.k, len(sources))
    jobs, heldout_info = _jobs(cfg, world)
    print(f"compare: {heldout_info.line()}")

    t = time.time()
    per_source, eos = _sample_all(cfg, jobs, sources, slots, resolve_device(cfg.device))
    t_gen = time.time() - t

    splits: dict[str, list[dict]] = {}
    stats: dict[str, Any] = {}
    t_label = 0.0
    same = [sources.index(x) for x in sources]  # a repeated (path, temperature) is one policy
    for job in jobs:
        samples, slot_ids = interleave(per_source[job.split])
        source_ids = [[same[j] for j in row] for row in slot_ids] if len(sources) > 1 else None
        t = time.time()
        heldout = job.split == cfg.eval_split
        rows = rank_split(world, job.records, samples, f"{cfg.seed}-{job.split}", heldout=heldout, sources=source_ids)
        t_label += time.time() - t
        splits[job.split] = rows
        stats[job.split] = _split_stats(cfg, rows, job, eos[job.split], slots, sources)
    _write_datasets(out, splits)

    tr, ev = stats[cfg.train_split], stats[cfg.eval_split]
    summary = {
        "k": cfg.k,
        "sources": [f"{path}@{temp:g} x{n}" for (path, temp), n in zip(sources, slots)],
        "train_prompts": tr["prompts"],
        "eval_prompts": ev["prompts"],
        "train_pairs": tr["pairs"],
        "eval_pairs": ev["pairs"],
        "mean_distinct_responses": tr["mean_distinct_responses"],
        "eos_rate": tr["eos_rate"],
        "mean_gold_of_samples": tr["mean_gold_of_samples"],
        "pairs_tied_on_gold": tr["pairs_tied_on_gold"],
        "splits": stats,
        "seconds_generate": round(t_gen, 1),
        "seconds_label": round(t_label, 1),
        "seconds": round(time.time() - t_start, 1),
        "comparisons": str(out / "comparisons"),
        "pairs": str(out / "pairs"),
        "heldout": heldout_info.as_dict(),
    }
    print(
        f"compare: {tr['prompts']}+{ev['prompts']} prompts x K={cfg.k} from {len(sources)} source(s), "
        f"{tr['pairs_tied_on_gold']:.0%} of pairs tied on gold, "
        f"{tr['mean_distinct_responses']:.2f} distinct per prompt, EOS {tr['eos_rate']:.1%}, "
        f"{tr['pairs']} training pairs; generate {t_gen:.1f}s, label {t_label:.1f}s -> {out}/comparisons"
    )
    _write_readme(out, cfg, sources, slots, summary)
    return summary
