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
from tqdm.auto import tqdm

from alignlab.config import ConfigError, arg
from alignlab.data.load import DataError, load_dataset_any
from alignlab.evaluate.judges import world_records_ok
from alignlab.models.load import disable_dropout, load_causal_lm, load_tokenizer
from alignlab.outputs import atomic_replace_dir, atomic_write_text
from alignlab.rollout.generate import generate_responses
from alignlab.stages.sft import context_length, prompt_ids_for_generation
from alignlab.training import resolve_device
from alignlab.world import gold_reward, load_world, rank_responses, ranking_pairs

K_RANGE = (4, 9)


@dataclass
class CompareConfig:
    policy: str = arg("runs/sft", "the SFT model that writes the K responses (hub id or local path)")
    tokenizer: str = arg("", "tokenizer path or hub id; empty = the one saved with the policy")
    trust_remote_code: bool = arg(False, "allow custom modelling code from the hub")
    data: str = arg("runs/world/rm", "RM prompts of the built-in world (rows need prompt, task, meta)")
    world_dir: str = arg("runs/world", "the built-in world whose labelers rank the responses")
    train_split: str = arg("train", "split of prompts for the reward model's training comparisons")
    eval_split: str = arg("validation", "split of held-out prompts (also ranked by a held-out labeler)")
    k: int = arg(4, "responses sampled and ranked per prompt (InstructGPT: 4..9)")
    max_prompts: int = arg(0, "use at most this many training prompts, a seeded subset (0 = all)")
    max_eval_prompts: int = arg(0, "use at most this many held-out prompts (0 = all)")
    temperature: float = arg(1.0, "sampling temperature (InstructGPT samples at 1)")
    top_p: float = arg(1.0, "nucleus sampling (1 = off)")
    max_new_tokens: int = arg(32, "response length cap")
    batch_size: int = arg(256, "sequences per generation batch")
    chunk_prompts: int = arg(256, "prompts generated per progress-bar step (each chunk has its own seed)")
    device: str = arg("auto", "auto, cpu or cuda")
    seed: int = arg(0, "seed for the prompt subset, sampling and the labelers")
    output_dir: str = arg("runs/compare", "where comparisons/ and pairs/ are written")

    def __post_init__(self) -> None:
        lo, hi = K_RANGE
        if not lo <= self.k <= hi:
            raise ConfigError(f"compare: 'k' must be between {lo} and {hi} (InstructGPT ranks K=4..9 responses "
                              f"per prompt), got {self.k!r}")
        if self.temperature < 0:
            raise ConfigError(f"compare: 'temperature' must be >= 0, got {self.temperature!r}")


PRESETS = {
    "smoke": {"max_new_tokens": 24, "batch_size": 128, "chunk_prompts": 64},
    # 2000 of the world's 3135 RM prompts keep this stage under ~2 min on 2 CPU cores; the reward
    # model's held-out accuracy was the same with 1800 prompts as with all of them (see the report).
    "default": {"max_prompts": 2000},
}


def _subset(n: int, limit: int, seed: int) -> list[int]:
    if not limit or limit >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:limit].tolist())


def sample_k(model, tok, prompts: list, cfg: CompareConfig, split_seed: int, desc: str) -> tuple[list[list[str]], float]:
    """K sampled responses per prompt (and the share that ended with EOS)."""
    max_prompt = max(1, context_length(model) - cfg.max_new_tokens)
    ids = prompt_ids_for_generation(tok, prompts, max_prompt)
    texts: list[str] = []
    ended = 0
    for c, start in enumerate(tqdm(range(0, len(ids), cfg.chunk_prompts), desc=desc, dynamic_ncols=True)):
        chunk = [p for p in ids[start : start + cfg.chunk_prompts] for _ in range(cfg.k)]  # each prompt K times
        roll = generate_responses(model, tok, chunk, cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                  batch_size=cfg.batch_size, seed=split_seed * 100_003 + c)
        texts.extend(roll.texts)
        ended += int(roll.ended_with_eos.sum())
    return [texts[i : i + cfg.k] for i in range(0, len(texts), cfg.k)], ended / max(len(texts), 1)


def rank_split(world, records: list[dict], samples: list[list[str]], seed: str, heldout: bool) -> list[dict[str, Any]]:
    """Ranked rows: one training persona per prompt (seeded), plus a held-out persona if asked."""
    rng = random.Random(f"{seed}-labelers")
    rng_h = random.Random(f"{seed}-heldout-labelers")
    train_personas, heldout_personas = world.training_personas(), world.heldout_personas()
    rows = []
    for rec, responses in zip(records, samples):
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


def run(cfg: CompareConfig) -> dict:
    """Sampling and labelling run in one process. Under `accelerate launch` rank 0 does all of it and
    the other ranks wait (sampling K answers is cheap next to training; sharding it would also
    change which labeler the seeded stream gives each prompt)."""
    from accelerate import PartialState

    state = PartialState(cpu=resolve_device(cfg.device) == "cpu")
    if state.num_processes > 1 and state.is_main_process:
        print(f"compare: {state.num_processes} processes launched; sampling and labelling run on rank 0, the others wait")
    summary = _run(cfg) if state.is_main_process else {}
    state.wait_for_everyone()
    return summary


def _run(cfg: CompareConfig) -> dict:
    import datasets

    t_start = time.time()
    out = Path(cfg.output_dir)
    device = resolve_device(cfg.device)
    world = load_world(cfg.world_dir)
    if not world.heldout_personas():
        raise ValueError(f"{cfg.world_dir}: the world has no held-out labelers")
    tok = load_tokenizer(cfg.tokenizer or cfg.policy, cfg.trust_remote_code)
    model = load_causal_lm(cfg.policy, cfg.trust_remote_code).to(device)
    if len(tok) > model.get_input_embeddings().num_embeddings:
        raise ValueError(f"{cfg.policy}: tokenizer has {len(tok)} tokens but the model only {model.get_input_embeddings().num_embeddings} "
                         "embeddings (give the SFT output, whose tokenizer matches)")
    disable_dropout(model)
    model.eval()

    splits: dict[str, list[dict]] = {}
    stats: dict[str, Any] = {}
    t_gen = t_label = 0.0
    for s_i, (split, limit) in enumerate(((cfg.train_split, cfg.max_prompts), (cfg.eval_split, cfg.max_eval_prompts))):
        ds = load_dataset_any(cfg.data, split)
        if not world_records_ok(ds):
            raise DataError(f"{cfg.data} ({split} split): the labelers need the world's prompt/task/meta columns "
                            f"(got {ds.column_names}); bring your own comparisons straight to the reward stage instead")
        idx = _subset(len(ds), limit, cfg.seed + s_i)
        records = [ds[i] for i in idx]
        t = time.time()
        samples, eos_rate = sample_k(model, tok, [r["prompt"] for r in records], cfg, cfg.seed * 10 + s_i, f"compare {split}")
        t_gen += time.time() - t
        t = time.time()
        rows = rank_split(world, records, samples, f"{cfg.seed}-{split}", heldout=(split == cfg.eval_split))
        t_label += time.time() - t
        splits[split] = rows
        distinct = [len(set(r["responses"])) for r in rows]
        golds = [g for r in rows for g in r["gold"]]
        stats[split] = {
            "prompts": len(rows),
            "of_prompts": len(ds),
            "pairs": sum(len(ranking_pairs(r["responses"])) for r in rows),
            "mean_distinct_responses": round(sum(distinct) / len(distinct), 3),
            "all_identical_prompts": sum(d == 1 for d in distinct),
            "eos_rate": round(eos_rate, 4),
            "mean_gold_of_samples": round(sum(golds) / len(golds), 4),
            "labelers": dict(sorted(Counter(r["labeler"] for r in rows).items())),
        }
        if split == cfg.eval_split:
            stats[split]["heldout_labelers"] = dict(sorted(Counter(r["labeler_heldout"] for r in rows).items()))

    # ---- write both folders whole, then swap them into place
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

    tr, ev = stats[cfg.train_split], stats[cfg.eval_split]
    summary = {
        "k": cfg.k,
        "train_prompts": tr["prompts"],
        "eval_prompts": ev["prompts"],
        "train_pairs": tr["pairs"],
        "eval_pairs": ev["pairs"],
        "mean_distinct_responses": tr["mean_distinct_responses"],
        "eos_rate": tr["eos_rate"],
        "mean_gold_of_samples": tr["mean_gold_of_samples"],
        "splits": stats,
        "seconds_generate": round(t_gen, 1),
        "seconds_label": round(t_label, 1),
        "seconds": round(time.time() - t_start, 1),
        "comparisons": str(out / "comparisons"),
        "pairs": str(out / "pairs"),
    }
    print(f"compare: {tr['prompts']}+{ev['prompts']} prompts x K={cfg.k} (T={cfg.temperature}), "
          f"{tr['mean_distinct_responses']:.2f} distinct per prompt, EOS {tr['eos_rate']:.1%}, "
          f"{tr['pairs']} training pairs; generate {t_gen:.1f}s, label {t_label:.1f}s -> {out}/comparisons")
    atomic_write_text(out / "README.md", "\n".join([
        "# alignlab compare output (data, not a model)", "",
        "```python", "import datasets",
        f"ranked = datasets.load_from_disk('{(out / 'comparisons').as_posix()}')  # prompt, responses (best -> worst), labeler, ...",
        f"pairs = datasets.load_from_disk('{(out / 'pairs').as_posix()}')  # prompt, chosen, rejected",
        "```", "",
        f"K={cfg.k} samples per prompt from `{cfg.policy}` at temperature {cfg.temperature}, ranked by one training "
        "labeler each; validation also by a held-out labeler (`responses_heldout`). Identical samples are kept and "
        "carry no preference (see alignlab/stages/compare.py).", "",
        *[f"- **{k}**: {v}" for k, v in summary.items() if not isinstance(v, dict)], ""]))
    return summary
