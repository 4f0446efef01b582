"""Stage: FLAN-style instruction tuning, judged on whole task clusters never seen in tuning.

For each held-out cluster (one model per cluster, as FLAN did: a cluster is "unseen"
only if no task from it was tuned on), the base model is instruction-tuned on every
template of every task in the OTHER clusters, then asked zero-shot the held-out
cluster's prompts. Two scores, each averaged per template and then over templates:

* ``accuracy``: greedy answers scored by the world's task checker (``helpful``), every prompt;
* ``rank_accuracy``: FLAN's rank classification, on the prompts whose task has a closed answer
  set (yes/no, sentiment, a category, one of two names, one value of the asked attribute:
  ``evaluate/rank_classification.py``): the option the model gives the highest log-likelihood
  as its response must be the right one. It measures whether the model knows the answer, not
  whether it writes it in a form the checker reads; ``rank_generation_accuracy`` is
  ``accuracy`` on the same prompts, ``rank_chance`` what picking at random scores there.

Three models asked the same prompts:

* ``base``: the same pretrained model prompted directly, in the corpus's own
  "Question: ... / Answer:" form (it never saw a chat template); its options follow "Answer:";
* ``instruction``: tuned with the task templates, asked in its chat format;
* ``no_template``: tuned on the same examples with the instruction removed (only the
  task's raw inputs, e.g. "Bruk colour" -> "Bruk's colour is blue."), FLAN's ablation
  (FLAN: 37.3 vs 55.2 with instructions). It is asked with instructions at test time.

FLAN also appended "OPTIONS: ..." listing the classes to classification prompts, in tuning and
at test time. Not here: the tuning mixture is the world's own templates, which carry no such
suffix, so adding it only at test time would ask in a format no model here was tuned on; rank
classification already confines the answer to the options (the suffix's purpose in FLAN, whose
model generated its answer), and the templates name the options where the task needs them
("positive or negative", "X or Y", the category list).

SFT itself is the SFT stage (``stages/sft.py``) run on a filtered copy of the data.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from accelerate import PartialState

from alignlab.config import apply, arg, check_output_name
from alignlab.data.chat import CORPUS_QA, encode_prompt, response_suffix
from alignlab.data.heldout import HeldoutInfo, canonical
from alignlab.errors import ConfigError, MissingInputError
from alignlab.evaluate.rank_classification import Options, options_for, rank_classify
from alignlab.models.load import load_causal_lm, load_tokenizer
from alignlab.outputs import atomic_write_json, read_summary
from alignlab.rollout.generate import generate_responses
from alignlab.stages.registry import STAGES, run_stage
from alignlab.training import resolve_device
from alignlab.world import load_world, score_response

BASE_PROMPT = CORPUS_QA  # the Q&A form the world's corpus uses


@dataclass
class InstructTuneConfig:
    world_dir: str = arg("runs/world", "the built-in world (its sft split is the tuning mixture)")
    model: str = arg("runs/pretrain", "the base model every variant starts from")
    heldout_clusters: list[str] = arg(
        factory=lambda: ["world_qa", "classification", "comparison_sorting", "extraction"],
        help="clusters to hold out, one tuned model per cluster",
    )
    exclude_clusters: list[str] = arg(
        factory=lambda: ["unanswerable", "harmful"],
        help="clusters left out of the tuning mixture altogether: FLAN's mixture was NLP tasks; canned "
        "answers ('I don't know', refusals) belong to the RLHF data, and a small model tuned on them "
        "answers every unseen task with them",
    )
    no_template: bool = arg(True, "also tune the no-template ablation for each held-out cluster")
    epochs: int = arg(2, "tuning epochs per model")
    lr: float = arg(1e-3, "peak learning rate")
    batch_size: int = arg(32, "examples per optimiser step")
    max_eval_prompts: int = arg(240, "held-out cluster prompts asked zero-shot (all templates, all splits)")
    max_new_tokens: int = arg(24, "answer length cap (greedy decoding)")
    eval_batch_size: int = arg(64, "prompts per generation batch")
    seed: int = arg(0, "seed for tuning and the prompt sample")
    device: str = arg("auto", "auto, cpu or cuda")
    output_dir: str = arg("runs/instruct_tune", "one sub-folder per held-out cluster and variant")

    def __post_init__(self) -> None:
        for i, cluster in enumerate(self.heldout_clusters):  # each names a sub-folder of output_dir
            check_output_name(cluster, f"instruct-tune: 'heldout_clusters[{i}]'")


PRESETS = {
    "smoke": {
        "heldout_clusters": ["world_qa", "classification"],
        "epochs": 2,
        "batch_size": 16,
        "max_eval_prompts": 40,
    },
    "default": {},
}


def no_template_input(meta: dict) -> str:
    """The task's raw inputs without the instruction: slot values, minus articles and duplicates."""
    seen, parts = set(), []
    for value in meta.get("slots", {}).values():
        text = str(value)
        if text.lower() in ("a", "an", "the") or text.lower() in seen:
            continue
        seen.add(text.lower())
        parts.append(text)
    return " ".join(parts)


def tuning_data(world_dir: Path, heldout: str, exclude: list[str], instructions: bool, out: Path) -> Path:
    """World SFT rows of every cluster except ``heldout`` (and ``exclude``), saved for the SFT stage.

    The target is each task's reference answer, not the demonstrator's: FLAN tuned on data sets'
    own targets, and the world's demonstration mixture is the RLHF recipe's business."""
    sft = datasets.load_from_disk(str(world_dir / "sft"))
    dd = {}
    for split in ("train", "validation"):
        rows = [r for r in sft[split] if r["cluster"] != heldout and r["cluster"] not in exclude]
        if not instructions:
            rows = [dict(r, prompt=no_template_input(json.loads(r["meta"]))) for r in rows]
        dd[split] = datasets.Dataset.from_list(
            [{"prompt": r["prompt"], "completion": json.loads(r["meta"])["reference"]} for r in rows]
        )
    datasets.DatasetDict(dd).save_to_disk(str(out))
    return out


def heldout_prompts(world_dir: Path, cluster: str, n: int, seed: int) -> list[dict]:
    """Every record of the cluster (the tuned model saw none of them), sampled to n."""
    rows = []
    for name in ("sft", "test"):
        for split in datasets.load_from_disk(str(world_dir / name)).values():
            rows += [r for r in split if r["cluster"] == cluster]
    rng = random.Random(seed)
    rng.shuffle(rows)
    return rows[:n]


def tuned_prompts(world_dir: Path, heldout: str, exclude: list[str]) -> set[str]:
    """The prompts ``tuning_data`` tunes on when ``heldout`` is held out (canonical, as data/heldout keys them)."""
    sft = datasets.load_from_disk(str(world_dir / "sft"))
    return {
        canonical(p)
        for split in ("train", "validation")
        for p, c in zip(sft[split]["prompt"], sft[split]["cluster"])
        if c != heldout and c not in exclude
    }


def heldout_info(world_dir: Path, clusters: list[str], exclude: list[str], records: dict[str, list]) -> HeldoutInfo:
    """summary.json's ``heldout``: the held-out clusters' prompts asked zero-shot (``records`` by cluster), each
    checked against the mixture its model was tuned on (``overlap``: prompts in both, expected 0)."""
    tuned = {c: tuned_prompts(world_dir, c, exclude) for c in clusters}
    asked = {c: {canonical(r["prompt"]) for r in records[c]} for c in clusters}
    return HeldoutInfo(
        f"{world_dir / 'sft'}, {world_dir / 'test'}",
        "clusters never tuned on: " + ", ".join(clusters),
        "split",
        sum(len(a) for a in asked.values()),
        len(set().union(*tuned.values())),
        sum(len(asked[c] & tuned[c]) for c in clusters),
    )


def asked_ids(tok, records: list[dict], plain: bool) -> list[list[int]]:
    """The prompts as a model is asked them: the base model in the corpus's own Q&A form, a tuned one in its chat
    format (as SFT encoded them)."""
    if plain:
        return [
            [tok.bos_token_id] + tok(BASE_PROMPT.format(prompt=r["prompt"]), add_special_tokens=False)["input_ids"]
            for r in records
        ]
    return [encode_prompt(tok, r["prompt"]) for r in records]


def template_mean(records: list[dict], scores: list[float]) -> tuple[float, dict]:
    """The mean score per template, and the mean of those (every template weighs the same)."""
    per_template = defaultdict(list)
    for r, s in zip(records, scores):
        per_template[r["template"]].append(s)
    by_template = {t: sum(v) / len(v) for t, v in sorted(per_template.items())}
    return sum(by_template.values()) / len(by_template), by_template


def option_suffix(tok, text: str, plain: bool) -> str:
    """An option as the continuation scored after the prompt: after "Answer:" a space, as the corpus's answers
    follow it; after the chat template, as SFT encoded responses (no EOS: the options are whole sentences,
    none a prefix of another, so where the response stops adds nothing to tell them apart)."""
    return " " + text if plain else response_suffix(tok, text)


def rank_accuracy(model, tok, prompts, records, options: list[Options | None], helpful, plain, cfg) -> dict:
    """FLAN's rank classification of the prompts that have options (``helpful``: their generation scores)."""
    keep = [i for i, o in enumerate(options) if o is not None]
    if not keep:
        return {"rank_accuracy": None, "rank_generation_accuracy": None, "rank_examples": []}
    conts = [[option_suffix(tok, t, plain) for t in options[i].texts] for i in keep]
    picks, _ = rank_classify(model, tok, [prompts[i] for i in keep], conts, cfg.eval_batch_size)
    kept = [records[i] for i in keep]
    return {
        "rank_accuracy": template_mean(kept, [float(p == options[i].gold) for p, i in zip(picks, keep)])[0],
        # generation on the same prompts: the gap to rank_accuracy is what the answer's form costs
        "rank_generation_accuracy": template_mean(kept, [helpful[i] for i in keep])[0],
        "rank_examples": [
            {"prompt": records[i]["prompt"], "pick": options[i].texts[p]} for p, i in zip(picks[:5], keep)
        ],
    }


@torch.no_grad()
def zero_shot_accuracy(
    model_path: str, records: list[dict], options: list[Options | None], world, plain: bool, cfg: InstructTuneConfig
) -> dict:
    """Greedy answers to held-out prompts, scored by the task checker, and the rank classification of those
    with ``options``; both averaged per template."""
    device = resolve_device(cfg.device)
    tok = load_tokenizer(model_path)
    model = load_causal_lm(model_path).to(device)
    prompts = asked_ids(tok, records, plain)
    ro = generate_responses(
        model, tok, prompts, cfg.max_new_tokens, temperature=0.0, batch_size=cfg.eval_batch_size, seed=cfg.seed
    )
    # the base model's answer is cut at the end of its line (the corpus's next line is another question)
    answers = [t.split("\n")[0].strip() if plain else t.strip() for t in ro.texts]
    helpful = [score_response(world, r, a)["helpful"] for r, a in zip(records, answers)]
    accuracy, by_template = template_mean(records, helpful)
    return {
        "accuracy": accuracy,
        "by_template": by_template,
        **rank_accuracy(model, tok, prompts, records, options, helpful, plain, cfg),
        "examples": [{"prompt": r["prompt"], "answer": a} for r, a in list(zip(records, answers))[:5]],
    }


def rank_set(records: list[dict], options: list[Options | None]) -> dict:
    """What rank classification covers in a cluster: how many prompts, which tasks, and chance (a uniform pick)."""
    kept = [(r, o) for r, o in zip(records, options) if o is not None]
    return {
        "rank_n": len(kept),
        "rank_tasks": sorted({r["task"] for r, _ in kept}),
        "rank_chance": template_mean([r for r, _ in kept], [1 / len(o.answers) for _, o in kept])[0] if kept else None,
    }


def sft_config(cfg: InstructTuneConfig, data: Path, run_dir: Path):
    """The SFT stage's config for one tuned model (resumable: a killed tuning run continues)."""
    settings = {
        "model": cfg.model,
        "data": str(data),
        "judge": "loss",
        "eval_base": False,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "optim": {"lr": cfg.lr},
        "run": {"seed": cfg.seed, "device": cfg.device, "resume": True},
        "output_dir": str(run_dir),
    }
    return apply(STAGES["sft"].load()[0](), settings, "instruct-tune")  # the SFT stage's config class


def check_clusters(cfg: InstructTuneConfig, world_dir: Path) -> None:
    """The clusters named are the world's, and none is both held out and excluded (before the world loads)."""
    if not (world_dir / "stats.json").is_file():
        raise MissingInputError(
            f"{world_dir} has no stats.json; build the world with `alignlab world --output_dir {world_dir}`"
        )
    known = set(json.loads((world_dir / "stats.json").read_text())["clusters"])
    for key in ("heldout_clusters", "exclude_clusters"):
        unknown = [c for c in getattr(cfg, key) if c not in known]
        if unknown:
            raise ConfigError(f"{key}: unknown cluster(s) {unknown}; the world has {sorted(known)}")
    if set(cfg.heldout_clusters) & set(cfg.exclude_clusters):
        raise ConfigError("heldout_clusters and exclude_clusters overlap")


def judge_cluster(
    cfg: InstructTuneConfig, cluster: str, records: list[dict], world, variants: list[str], state: PartialState
) -> dict:
    """One held-out cluster's prompts asked of the base model and of each variant, tuned first on the other
    clusters (resumable: a variant with a finished SFT run is only asked)."""
    world_dir, out = Path(cfg.world_dir), Path(cfg.output_dir)
    options = [options_for(r, world) for r in records]  # the same options for every model
    res = {"n_prompts": len(records), **rank_set(records, options)}
    res["base"] = zero_shot_accuracy(cfg.model, records, options, world, True, cfg)
    for variant in variants:
        run_dir = out / cluster / variant
        if read_summary(run_dir) is None:
            data = out / cluster / f"{variant}_data"
            if state.is_main_process:
                tuning_data(world_dir, cluster, cfg.exclude_clusters, variant == "instruction", data)
            state.wait_for_everyone()
            run_stage("sft", sft_config(cfg, data, run_dir))
        res[variant] = zero_shot_accuracy(str(run_dir), records, options, world, False, cfg)
    return res


def percents(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1%}" for k, v in scores.items())


def cluster_line(cluster: str, res: dict, kinds: list[str]) -> str:
    line = f"held-out cluster {cluster} ({res['n_prompts']} prompts): " + percents(
        {k: res[k]["accuracy"] for k in kinds}
    )
    if res["rank_n"]:
        line += f"; rank-classified ({res['rank_n']} prompts, chance {res['rank_chance']:.1%}): "
        line += percents({k: res[k]["rank_accuracy"] for k in kinds})
    return line


def means(results: dict[str, dict], kinds: list[str], key: str) -> dict[str, float | None]:
    """Per model kind, ``key`` averaged over the clusters that have it (rank accuracy: those with options)."""
    have = [r for r in results.values() if r["base"][key] is not None]
    return {k: (sum(r[k][key] for r in have) / len(have) if have else None) for k in kinds}


def run(cfg: InstructTuneConfig) -> dict:
    t0 = time.time()
    world_dir, out = Path(cfg.world_dir), Path(cfg.output_dir)
    check_clusters(cfg, world_dir)
    world = load_world(str(world_dir))
    kinds = ["base", "instruction"] + (["no_template"] if cfg.no_template else [])
    # under `accelerate launch` the SFT runs are multi-process; this stage's own files are written
    # by rank 0 (the others wait), and every rank computes the same greedy answers and option scores
    state = PartialState(cpu=resolve_device(cfg.device) == "cpu")
    asked = {c: heldout_prompts(world_dir, c, cfg.max_eval_prompts, cfg.seed) for c in cfg.heldout_clusters}
    heldout = heldout_info(world_dir, cfg.heldout_clusters, cfg.exclude_clusters, asked)
    if state.is_main_process:
        print(f"[instruct-tune] {heldout.line()}")
    results: dict[str, dict] = {}
    for cluster in cfg.heldout_clusters:
        results[cluster] = judge_cluster(cfg, cluster, asked[cluster], world, kinds[1:], state)
        if state.is_main_process:
            print(f"[instruct-tune] {cluster_line(cluster, results[cluster], kinds)}")
    mean, rank_mean = means(results, kinds, "accuracy"), means(results, kinds, "rank_accuracy")
    rank_tasks = sorted({t for r in results.values() for t in r["rank_tasks"]})
    if state.is_main_process:
        # rank_mean: over the clusters with rank-classified prompts (rank_tasks); None for a kind where none has
        saved = {"clusters": results, "mean": mean, "rank_mean": rank_mean, "rank_tasks": rank_tasks}
        atomic_write_json(out / "results.json", {**saved, "config": dataclasses.asdict(cfg)})
        print(f"[instruct-tune] mean zero-shot accuracy on unseen clusters: {percents(mean)}")
        if rank_tasks:
            print(f"[instruct-tune] rank-classified ({', '.join(rank_tasks)}): {percents(rank_mean)}")
    return stage_summary(cfg, results, kinds, heldout, round(time.time() - t0, 1))


def _round4(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def stage_summary(
    cfg: InstructTuneConfig, results: dict, kinds: list[str], heldout: HeldoutInfo, seconds: float
) -> dict:
    """summary.json: generation accuracy (``accuracy``) and rank-classification accuracy per cluster and kind."""
    mean, rank_mean = means(results, kinds, "accuracy"), means(results, kinds, "rank_accuracy")
    return {
        "heldout_clusters": cfg.heldout_clusters,
        "mean_accuracy": {k: _round4(v) for k, v in mean.items()},
        "accuracy": {c: {k: _round4(r[k]["accuracy"]) for k in kinds} for c, r in results.items()},
        "mean_rank_accuracy": {k: _round4(v) for k, v in rank_mean.items()},
        "rank_accuracy": {c: {k: _round4(r[k]["rank_accuracy"]) for k in kinds} for c, r in results.items()},
        "rank_prompts": {c: r["rank_n"] for c, r in results.items()},
        "rank_chance": {c: _round4(r["rank_chance"]) for c, r in results.items()},
        "rank_classified_tasks": sorted({t for r in results.values() for t in r["rank_tasks"]}),
        "instruction_beats_base": mean["instruction"] > mean["base"],
        "instruction_beats_no_template": (mean["instruction"] > mean["no_template"]) if cfg.no_template else None,
        "seconds": seconds,
        "heldout": heldout.as_dict(),
    }
