"""Study: reward over-optimisation laws on the built-in world (``alignlab study overoptimization``).

Gao, Schulman & Hilton (2022) measured how the gold reward of a policy optimised against a proxy reward
model moves with d = sqrt(KL(pi || pi_init)): best-of-n  R = d(alpha - beta d), RL  R = d(alpha - beta log d),
with alpha and beta smooth in the log of the proxy RM's size. Here the world's labelers ARE the gold reward,
so the curves are exact. The proxy RMs vary along one of two axes:

* data (the default): RMs of the SFT model's architecture, each trained on ``fractions`` of the run's
  comparisons (a seeded subset each);
* size (``rm_sizes``, Gao et al.'s own axis): RMs of several model shapes, each pretrained and SFT-tuned at its
  shape with the run's recipe (``studies.sizes``) and then trained on ALL the run's comparisons, so only the
  RM's size differs. The policy is always the run's SFT model, as Gao et al. kept theirs fixed.

The study, in the order it runs (the largest RM's measurements last, after the prediction):

1. proxy RMs: the reward step's config with ``max_prompts`` = fraction x the run's comparisons, or with
   ``model`` = each shape's SFT model (RUN/reward itself is the fraction-1 RM, or the RM of the run's own
   shape, when it exists);
2. best-of-n: n_max samples per held-out prompt (RUN/world/test, the first ``prompts``) from the SFT policy,
   drawn once and scored by gold; each RM scores the same draws, and best-of-m for every m <= n_max is read
   off them (``BestOfN.pick``; the fits use the unbiased expected pick over all n_max draws);
3. RL: PPO against each RM with no KL penalty (``kl_beta``), the held-out gold, RM score and KL measured every
   ``eval_interval`` iterations on the same held-out prompts (``heldout_curve.jsonl``), each prompt sampled
   ``eval_draws`` times (2+: each point's sampling noise is measured, and with it the held-out R² the RL law
   would score if it were true, ``r2_if_law_true``);
4. before the largest RM is measured: its d* and R* predicted from the smaller RMs' fits
   (``prediction_pre.json``); after: predicted against measured (``prediction.json``);
5. the fits (``fit.json``, with each law's R² on held-out points and whether gold peaks then falls while
   the proxy rises, per curve), Gao et al.'s Figures 1 and 2 (``best_of_n.png``, ``rl.png``) and ``summary.json``,
   which the run's report picks up from RUN/study_overoptimization;
6. every gold gain split by gold's components (helpful, truthful, harmless, style: gold is their weighted sum),
   for the best-of-n picks (``best_of_n/parts.json``) and along PPO (kept in ``heldout_curve.jsonl``):
   ``parts_at_peak`` in the summary and ``best_of_n_parts.png``, ``rl_parts.png`` say what the optimisation
   bought up to gold's peak and what it traded away after it.

Every piece is reused when finished (a killed study resumes); ``redo`` reruns the study's own pieces.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.config import ConfigError, apply, arg
from alignlab.errors import MissingInputError
from alignlab.outputs import atomic_write_json, read_summary
from alignlab.studies.sizes import DEFAULT_SIZES, SMOKE_SIZES

# beta of the RL runs: 0, as in Gao et al.'s main RL runs. They found a KL penalty acts like early stopping:
# it does not move the gold-vs-KL frontier, it only stops the run earlier on it, and the curve must reach
# past the gold peak to show the law's fall. (A first version used 0.01 so that prompts where the RM is flat
# would not drift; its runs stopped at 4.6-10 nats with gold still level, so the RL fall was never seen.)
RL_BETA = 0.0

# Gao et al.'s axis at the default run's depth: the sizes study's shapes (d_model 32, 64, 128, each step halving
# d_model and d_ff, so non-embedding parameters grow 4x) and one step below them, d_model 16: 13.4k to 853k (64x;
# Gao et al. spanned 3M to 3B). The largest is the default pipeline's own shape, so RUN/reward is that RM.
RM_SIZE_SHAPES = [{"name": "d16", "d_model": 16, "n_layer": 4, "n_head": 1, "d_ff": 48}, *DEFAULT_SIZES]
# The smoke pipeline's shape (d_model 64, 2 layers) and two smaller ones: the sizes study's smoke shapes.
SMOKE_RM_SIZE_SHAPES = SMOKE_SIZES


@dataclass
class OveroptStudyConfig:
    run_dir: str = arg("runs/default", "a pipeline run with world, sft, compare (and reward) finished")
    preset: str = arg("", "the pipeline preset of the run's steps; empty = the run's own (its config.yaml)")
    fractions: list[float] = arg(
        # 4 RMs over 8x of data: the largest is predicted from a trend through 3 points, which has a residual
        # to put in the interval (a line through 2 points has none)
        factory=lambda: [0.125, 0.25, 0.5, 1.0],
        help="share of the run's comparisons each proxy RM trains on (>= 3; the largest is predicted from the rest)",
    )
    rm_sizes: list[dict] = arg(
        factory=list,
        help="proxy RMs of these model shapes instead, each {name, d_model, n_layer, n_head, d_ff} (>= 3): each "
        "pretrained and SFT-tuned at its shape, then trained on all the run's comparisons; empty = 'fractions'",
    )
    prompts: int = arg(64, "held-out prompts: the first N of the world's test split (best-of-n and PPO's evaluation)")
    n_max: int = arg(256, "best-of-n for n = 1, 2, 4, ..., n_max (a power of 2, >= 4)")
    iterations: int = arg(40, "PPO iterations against each RM (the run's hack preset: 40)")
    ppo_seeds: int = arg(
        1, "PPO runs against each RM (seeds seed, seed+1, ...): the RL curve is their mean, prompt by prompt"
    )
    eval_interval: int = arg(4, "PPO iterations between held-out measurements of gold, RM score and KL")
    eval_draws: int = arg(
        1,
        "PPO's sampled responses per held-out prompt at each measurement (eval.draws): 2+ also measure each "
        "point's sampling noise, and with it the R² the RL law could score if it were true",
    )
    kl_beta: float = arg(RL_BETA, "PPO's fixed KL coefficient (see RL_BETA for why 0)")
    n_boot: int = arg(1000, "bootstrap resamples of the prompts for the fits' intervals")
    seed: int = arg(0, "the run's seed whose SFT policy and comparisons are used; also the RMs' subsets and PPO")
    study_dir: str = arg(
        "", "where the study's pieces and summary.json go; empty = RUN/study_overoptimization (_rm_sizes: by size)"
    )
    redo: bool = arg(False, "rerun every piece of the study (RUN/reward itself is never retrained)")

    @property
    def output_dir(self) -> str:
        default = "study_overoptimization_rm_sizes" if self.rm_sizes else "study_overoptimization"
        return self.study_dir or str(Path(self.run_dir) / default)

    def __post_init__(self) -> None:
        where = "study overoptimization"
        f = self.fractions
        if len(f) < 3 or any(not 0 < x <= 1 for x in f) or len(set(f)) != len(f):
            raise ConfigError(f"{where}: 'fractions' needs >= 3 distinct shares in (0, 1], got {f}")
        if self.n_max < 4 or self.n_max & (self.n_max - 1):
            raise ConfigError(f"{where}: 'n_max' must be a power of 2 >= 4 (2 points with d > 0), got {self.n_max}")
        if self.prompts < 4:
            raise ConfigError(
                f"{where}: 'prompts' must be >= 4 (the fits resample prompts; the fall check splits them in two "
                f"halves of >= 2), got {self.prompts}"
            )
        if self.eval_interval < 1 or self.iterations < 2 * self.eval_interval:
            raise ConfigError(
                f"{where}: 'iterations' ({self.iterations}) must be >= 2 x 'eval_interval' ({self.eval_interval}): "
                "the RL fit needs 2 measurements after the start"
            )
        if self.ppo_seeds < 1 or self.eval_draws < 1:
            raise ConfigError(
                f"{where}: 'ppo_seeds' and 'eval_draws' must be >= 1, got {self.ppo_seeds} and {self.eval_draws}"
            )
        if self.kl_beta < 0 or self.n_boot < 10:
            raise ConfigError(f"{where}: 'kl_beta' must be >= 0 and 'n_boot' >= 10")
        if self.rm_sizes:
            self._check_rm_sizes(where)

    def _check_rm_sizes(self, where: str) -> None:
        from alignlab.studies.sizes import check_size, non_embedding_params

        for i, size in enumerate(self.rm_sizes):
            check_size(size, f"rm_sizes[{i}]", where)
        params = [non_embedding_params(s) for s in self.rm_sizes]
        if len(self.rm_sizes) < 3 or len(set(params)) < len(params):
            raise ConfigError(
                f"{where}: 'rm_sizes' needs >= 3 shapes of distinct parameter counts (the largest is predicted from "
                f"the rest), got {len(self.rm_sizes)} with {params} non-embedding parameters"
            )
        names = [s["name"] for s in self.rm_sizes]
        if len(set(names)) < len(names):
            raise ConfigError(f"{where}: 'rm_sizes' names must differ, got {names}")

    @property
    def axis(self) -> str:
        """What the proxy RMs differ in, the x of alpha's and beta's trend."""
        return "params" if self.rm_sizes else "comparisons"


_SMOKE = {"fractions": [0.25, 0.5, 1.0], "prompts": 8, "n_max": 16, "iterations": 4, "eval_interval": 2}
PRESETS = {
    "smoke": _SMOKE,
    "default": {},
    "rm_sizes": {"rm_sizes": RM_SIZE_SHAPES},
    "smoke_rm_sizes": {**_SMOKE, "rm_sizes": SMOKE_RM_SIZE_SHAPES},
}


# ----------------------------------------------------------------------------- the run's pieces


def _pipeline(cfg: OveroptStudyConfig):
    from alignlab.stages.pipeline import PipelineConfig
    from alignlab.studies.methods import _preset

    return PipelineConfig(preset=_preset(cfg), output_dir=cfg.run_dir, seeds=[cfg.seed])


def _need(folder: Path, what: str, run: Path) -> Path:
    if read_summary(folder) is None:
        raise MissingInputError(f"{folder} has not finished ({what}): run `alignlab pipeline --output-dir {run}` first")
    return folder


def rm_name(fraction: float) -> str:
    return f"rm_{100 * fraction:g}pct"


def train_rms(cfg: OveroptStudyConfig) -> dict[str, dict[str, Any]]:
    """The proxy RMs, smallest first: {name: {folder, x (the axis's value), comparisons, gold_accuracy, ...}}."""
    return _rms_by_size(cfg) if cfg.rm_sizes else _rms_by_data(cfg)


def _rm_entry(folder: Path, **extra) -> dict[str, Any]:
    s = read_summary(folder)
    # gold_accuracy: the share of held-out pairs the RM orders as gold does (the room it has to be exploited)
    return {
        "folder": str(folder),
        "comparisons": s["train_prompts"],
        "gold_accuracy": s.get("val_accuracy_gold"),
    } | extra


def _rms_by_data(cfg: OveroptStudyConfig) -> dict[str, dict[str, Any]]:
    """One RM of the run's shape per fraction of the comparisons (nested subsets)."""
    from alignlab.stages.pipeline import step_config
    from alignlab.stages.registry import run_stage

    run, out = Path(cfg.run_dir), Path(cfg.output_dir)
    _need(run / "compare", "the comparisons", run)
    base = step_config("reward", _pipeline(cfg), cfg.seed, run)[1]
    # how many comparisons "all" is: the full RM's own count when it exists, else a trained-on-all count
    full = read_summary(run / "reward")
    rms = {}
    for f in sorted(cfg.fractions):
        name = rm_name(f)
        folder = run / "reward" if f == 1.0 and full is not None else out / name
        if read_summary(folder) is None:
            total = full["train_prompts"] if full else _count_comparisons(base)
            # the reward stage keeps the first max_prompts of one seeded permutation: the subsets are nested
            rc = dataclasses.replace(base, output_dir=str(folder), max_prompts=max(2, round(f * total)))
            print(f"[study] {name}: reward model on {rc.max_prompts} of {total} comparisons -> {folder}", flush=True)
            run_stage("reward", apply(rc, {"run": {"resume": True}}, "study overoptimization"))
        rms[name] = _rm_entry(folder, fraction=f)
        rms[name]["x"] = rms[name]["comparisons"]
    return rms


def _run_shape(run: Path) -> dict[str, int]:
    """The model shape the run pretrained (RUN/pretrain/config.yaml)."""
    import yaml

    from alignlab.studies.sizes import SHAPE_KEYS

    path = _need(run / "pretrain", "the pretrained model", run) / "config.yaml"
    model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
    return {k: model.get(k) for k in SHAPE_KEYS}


def _rms_by_size(cfg: OveroptStudyConfig) -> dict[str, dict[str, Any]]:
    """One RM per shape on all the run's comparisons, each from its own shape's SFT model (OUT/sizes/<name>,
    the sizes study's pretraining and SFT); the run's own shape uses RUN/sft and RUN/reward."""
    from alignlab.stages.pipeline import step_config
    from alignlab.stages.registry import run_stage
    from alignlab.studies.sizes import SHAPE_KEYS, SizeStudyConfig, non_embedding_params, train_size

    run, out = Path(cfg.run_dir), Path(cfg.output_dir)
    _need(run / "compare", "the comparisons", run)
    base = step_config("reward", _pipeline(cfg), cfg.seed, run)[1]
    own = _run_shape(run)
    steps = SizeStudyConfig(
        run_dir=cfg.run_dir, preset=cfg.preset, sizes=cfg.rm_sizes, seed=cfg.seed, flan_seeds=[],
        study_dir=str(out / "sizes"),
    )  # fmt: skip
    params = {s["name"]: non_embedding_params(s) for s in cfg.rm_sizes}
    rms = {}
    for size in sorted(cfg.rm_sizes, key=lambda s: params[s["name"]]):
        name, shape = f"rm_{size['name']}", {k: size[k] for k in SHAPE_KEYS}
        folder = out / name
        if shape == own and read_summary(run / "reward") is not None:
            folder = run / "reward"
        elif read_summary(folder) is None:
            if shape == own:
                sft = run / "sft"
            else:
                train_size(steps, size, ["pretrain", "sft"])
                sft = Path(steps.output_dir) / size["name"] / "sft"
            rc = dataclasses.replace(base, model=str(sft), output_dir=str(folder))
            print(f"[study] {name}: reward model from {sft} on all comparisons -> {folder}", flush=True)
            run_stage("reward", apply(rc, {"run": {"resume": True}}, "study overoptimization"))
        rms[name] = _rm_entry(folder, shape=shape, params=params[size["name"]], x=params[size["name"]])
    return rms


def _count_comparisons(reward_cfg) -> int:
    from alignlab.stages.reward import comparison_rows, load_train_eval

    split = load_train_eval(
        reward_cfg.data, reward_cfg.train_split, reward_cfg.eval_split, reward_cfg.eval_fraction, reward_cfg.eval_data
    )
    return len(comparison_rows(split.train, reward_cfg.data)[0])


def _ppo_base(cfg: OveroptStudyConfig):
    """The run's hack step (PPO with evaluations along the run), with the study's beta, length and prompts."""
    from alignlab.stages.pipeline import step_config

    c = step_config("ppo_hack", _pipeline(cfg), cfg.seed, Path(cfg.run_dir))[1]
    return apply(
        c,
        {
            "iterations": cfg.iterations,
            "kl": {"beta": cfg.kl_beta, "adaptive": False},
            "eval": {"prompts": cfg.prompts, "interval": cfg.eval_interval, "greedy": False, "draws": cfg.eval_draws},
            "run": {"resume": True},
        },
        "study overoptimization",
    )


def heldout_rows(cfg: OveroptStudyConfig) -> list[dict[str, Any]]:
    """The first ``prompts`` rows of the world's test split: the prompts PPO's held-out evaluation uses."""
    import datasets

    path = _need(Path(cfg.run_dir) / "world", "the world", Path(cfg.run_dir)) / "test"
    ds = datasets.load_from_disk(str(path))["test"]
    if len(ds) < cfg.prompts:
        raise ConfigError(f"study overoptimization: 'prompts' is {cfg.prompts} but {path} has {len(ds)} rows")
    return [ds[i] for i in range(cfg.prompts)]


# ----------------------------------------------------------------------------- best-of-n


def bon_samples(cfg: OveroptStudyConfig, ppo) -> dict[str, Any]:
    """n_max samples per held-out prompt from the SFT policy, with their gold (drawn once, kept in samples.json)."""
    from alignlab.data.chat import encode_prompt_rows
    from alignlab.evaluate.best_of_n import best_of_n
    from alignlab.evaluate.judges import WorldJudge
    from alignlab.models.load import context_length, disable_dropout, load_causal_lm, load_tokenizer

    path = Path(cfg.output_dir) / "best_of_n" / "samples.json"
    if path.is_file():
        return json.loads(path.read_text())
    rows = heldout_rows(cfg)
    tok, policy = load_tokenizer(ppo.policy), load_causal_lm(ppo.policy)
    disable_dropout(policy)
    r = ppo.rollout  # the same length cap and temperature as the RL runs' episodes
    ids = encode_prompt_rows(tok, rows, "prompt", min(r.max_prompt_len, context_length(policy) - r.max_new_tokens - 1))
    print(f"[study] best-of-n: {cfg.n_max} samples for each of {len(rows)} held-out prompts", flush=True)
    bon = best_of_n(
        policy, tok, rows, ids, cfg.n_max, WorldJudge(ppo.world_dir).score,
        temperature=r.temperature, max_new_tokens=r.max_new_tokens, seed=cfg.seed, batch_size=r.gen_batch_size,
    )  # fmt: skip
    out = {"texts": bon.texts, "eos": bon.eos.tolist(), "gold": bon.scores.tolist(), "finished_at": time.time()}
    atomic_write_json(path, out)
    return out


def bon_parts(cfg: OveroptStudyConfig, ppo, samples: dict) -> dict[str, list[list[float]]]:
    """Every sample's gold split by component (best_of_n/parts.json; computed from the saved texts, so a study
    whose samples were drawn before parts were kept gains them without sampling again)."""
    from alignlab.evaluate.judges import WorldJudge

    path = Path(cfg.output_dir) / "best_of_n" / "parts.json"
    if path.is_file():
        return json.loads(path.read_text())
    rows = heldout_rows(cfg)
    P, N = len(samples["texts"]), len(samples["texts"][0])
    flat = WorldJudge(ppo.world_dir).gold_parts(
        [r for r in rows for _ in range(N)], [t for x in samples["texts"] for t in x]
    )
    out = {c: np.asarray(v).reshape(P, N).tolist() for c, v in flat.items()}
    atomic_write_json(path, out)
    return out


def constant_answer_gains(cfg: OveroptStudyConfig, ppo, samples: dict) -> dict[str, float]:
    """Each constant answer's mean gold gain over the SFT policy's mean sample (the n_max draws per prompt): how
    much gold saying nothing earns on the study's prompts. Where it is as high as the optimised policies' gold,
    gold itself rewards evasion and has little left to lose."""
    from alignlab.evaluate.constant_answers import CONSTANT_ANSWERS
    from alignlab.evaluate.judges import WorldJudge

    rows, judge = heldout_rows(cfg), WorldJudge(ppo.world_dir)
    sft = np.asarray(samples["gold"], dtype=np.float64).mean(axis=1)
    return {y: float(np.mean(np.asarray(judge.gold(rows, [y] * len(rows))) - sft)) for y in CONSTANT_ANSWERS}


def bon_scores(cfg: OveroptStudyConfig, name: str, rm_folder: str, samples: dict) -> dict[str, Any]:
    """The RM's score of every sample (best_of_n/<rm>.json): the same draws for every RM."""
    from alignlab.evaluate.judges import RewardModelJudge

    path = Path(cfg.output_dir) / "best_of_n" / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    rows = heldout_rows(cfg)
    P, N = len(samples["texts"]), len(samples["texts"][0])
    flat_rows = [r for r in rows for _ in range(N)]
    flat = [t for row in samples["texts"] for t in row]
    print(f"[study] best-of-n: {name} scores the {P} x {N} samples", flush=True)
    scores = np.asarray(RewardModelJudge(rm_folder).score(flat_rows, flat)).reshape(P, N)
    out = {"rm": rm_folder, "scores": scores.tolist(), "finished_at": time.time()}
    atomic_write_json(path, out)
    return out


def _expected_of_pick(key: np.ndarray, value: np.ndarray, m: int) -> np.ndarray:
    """[P] E[value of the sample with the highest key among m of the N drawn] (unbiased, every m-subset
    weighted equally: ``headroom.expected_best_of``'s weights applied to ``value`` in key order)."""
    N = key.shape[1]
    weights = np.array([math.comb(i, m - 1) for i in range(N)], dtype=np.float64) / math.comb(N, m)
    order = np.argsort(key, axis=1, kind="stable")
    return np.take_along_axis(value, order, axis=1) @ weights


def bon_curve(samples: dict, no_eos_penalty: float) -> dict[str, Any]:
    """Per n: d, and per prompt the gold and RM-score gains of the RM's pick over the policy's mean sample.

    The RM picks as PPO's rollouts are scored (an answer without EOS gets ``no_eos_penalty``), so best-of-n and
    RL optimise the same proxy; the proxy reported is the RM's own score of the pick, as PPO's held-out one."""
    from alignlab.evaluate.best_of_n import BestOfN
    from alignlab.evaluate.headroom import best_of_groups
    from alignlab.evaluate.overoptimization_fit import best_of_n_d

    gold, raw, eos = (np.asarray(samples[k], dtype=np.float64) for k in ("gold", "scores", "eos"))
    key = np.where(eos > 0, raw, no_eos_penalty)
    N = gold.shape[1]
    bon = BestOfN(N, samples["texts"], key, eos, best_of_groups(key, N)[:, 0])
    rows = np.arange(len(gold))
    ns = [2**k for k in range(int(math.log2(N)) + 1)]
    curve: dict[str, Any] = {"n": ns, "d": [best_of_n_d(n) for n in ns], "gold": [], "proxy": [], "picked_gold": []}
    for n in ns:
        curve["gold"].append((_expected_of_pick(key, gold, n) - gold.mean(1)).tolist())
        curve["proxy"].append((_expected_of_pick(key, raw, n) - raw.mean(1)).tolist())
        curve["picked_gold"].append(float(gold[rows, bon.pick(n)].mean() - gold.mean()))  # the same draws' picks
    if "parts" in samples:  # what the pick's gold gain is made of: the parts' gains sum to it
        parts = {c: np.asarray(v, dtype=np.float64) for c, v in samples["parts"].items()}
        curve["parts"] = {
            c: [float(np.mean(_expected_of_pick(key, V, n) - V.mean(1))) for n in ns] for c, V in parts.items()
        }
    return curve


# ----------------------------------------------------------------------------- RL


def ppo_folders(cfg: OveroptStudyConfig, name: str) -> list[Path]:
    """The PPO runs against RM ``name``, one per seed (the first keeps the one-seed study's folder)."""
    out = Path(cfg.output_dir)
    return [out / (f"ppo_{name}" if i == 0 else f"ppo_{name}_seed{i}") for i in range(cfg.ppo_seeds)]


def run_ppo(cfg: OveroptStudyConfig, ppo, name: str, rm_folder: str) -> list[Path]:
    """PPO against the RM (value model a copy of it), once per seed; their folders."""
    from alignlab.stages.registry import run_stage

    folders = ppo_folders(cfg, name)
    for i, folder in enumerate(folders):
        if read_summary(folder) is None:
            seed = ppo.run.seed + i
            print(
                f"[study] RL: PPO against {name} (beta {cfg.kl_beta}, {cfg.iterations} iterations, seed {seed}) -> {folder}"
            )
            run = dataclasses.replace(ppo.run, seed=seed)
            run_stage(
                "ppo", dataclasses.replace(ppo, reward_model=rm_folder, value_model="", output_dir=str(folder), run=run)
            )
    return folders


def _heldout_steps(folder: Path) -> dict[int, dict]:
    from alignlab.stages.ppo_eval import CURVE_FILE

    by_step: dict[int, dict] = {}
    for line in (folder / CURVE_FILE).read_text().splitlines():
        row = json.loads(line)
        by_step[row["step"]] = row  # a resumed run repeats steps: the last measurement of each counts
    return by_step


def rl_curve(folders: list[Path]) -> dict[str, Any]:
    """Per held-out measurement: d = sqrt(KL), and per prompt the gold and RM-score gains over the start, each
    the mean over the PPO runs (seeds). Averaging per prompt keeps the prompt bootstrap of the fits and checks
    as it is; the runs' own spread shows in ``runs`` (each run's last KL and gold). With several draws per
    prompt (``eval_draws``), ``gold_noise_var`` is each point's sampling variance (``_sampling_variance``); with
    several runs, ``gold_run_var`` is its variance from run to run (``_run_variance``)."""
    runs = [_heldout_steps(f) for f in folders]
    steps = sorted(runs[0])
    for f, r in zip(folders, runs):
        if sorted(r) != steps:
            raise ValueError(f"{f}: held-out steps {sorted(r)} differ from {folders[0]}'s {steps}; rerun it")

    def gain(r: dict, s: int, key: str) -> np.ndarray:
        return np.asarray(r[s][key]) - np.asarray(r[0][key])

    kl = [float(np.mean([np.mean(r[s]["kl"]) for r in runs])) for s in steps]
    return {
        "step": steps,
        "kl": kl,
        "d": [math.sqrt(max(k, 0.0)) for k in kl],  # an estimate below 0 is noise around 0: no movement
        "gold": [np.mean([gain(r, s, "gold") for r in runs], axis=0).tolist() for s in steps],
        "proxy": [np.mean([gain(r, s, "rm") for r in runs], axis=0).tolist() for s in steps],
        "parts": _parts_gain(runs, steps),
        "gold_noise_var": _sampling_variance(runs, steps),
        "gold_run_var": _run_variance(runs, steps),
        "runs": [
            {
                "folder": str(f),
                "kl_last": float(np.mean(r[steps[-1]]["kl"])),
                "gold_last": float(np.mean(gain(r, steps[-1], "gold"))),
            }
            for f, r in zip(folders, runs)
        ],
    }


def _parts_gain(runs: list[dict[int, dict]], steps: list[int]) -> dict[str, list[float]] | None:
    """Per gold component, its part's mean gain over the start at each measurement (over prompts and runs); the
    parts sum to the gold gain. None where a curve was recorded before PPO kept the parts."""
    if not all("gold_parts" in r[s] for r in runs for s in steps):
        return None

    def part(c: str, s: int) -> float:
        return float(np.mean([np.mean(np.asarray(r[s]["gold_parts"][c]) - r[0]["gold_parts"][c]) for r in runs]))

    return {c: [part(c, s) for s in steps] for c in runs[0][steps[0]]["gold_parts"]}


def parts_at_peak(curve: dict[str, Any]) -> dict[str, Any] | None:
    """Where the mean gold gain peaks, each part's gain up to that point and its change from there to the last
    point: which components the optimisation bought and which it then traded away."""
    if not curve.get("parts"):
        return None
    gold = [float(np.mean(g)) for g in curve["gold"]]
    i = int(np.argmax(gold))
    return {
        "peak_d": curve["d"][i],
        "last_d": curve["d"][-1],
        "to_peak": {c: v[i] for c, v in curve["parts"].items()},
        "after_peak": {c: v[-1] - v[i] for c, v in curve["parts"].items()},
    }


def _run_variance(runs: list[dict[int, dict]], steps: list[int]) -> list[float] | None:
    """Per measurement, the variance of the runs' mean gold gain around their mean: the spread of each run's
    mean gain (which holds its own path and its sampling), / runs. None with one run."""
    if len(runs) < 2:
        return None
    per_run = [[float(np.mean(np.subtract(r[s]["gold"], r[0]["gold"]))) for s in steps] for r in runs]
    return (np.var(per_run, axis=0, ddof=1) / len(runs)).tolist()


def _sampling_variance(runs: list[dict[int, dict]], steps: list[int]) -> list[float] | None:
    """Per measurement, the variance that sampling adds to its mean gold over prompts and runs, from the spread
    of each prompt's draws (an unbiased per-prompt variance over k draws, divided by k for their mean). Point 0 is
    the start's own noise, which every gain shares (``_r2_if_true`` adds it as one offset). None unless every
    measurement has 2+ draws."""
    if any(len(r[s].get("gold_by_draw", ())) < 2 for r in runs for s in steps):
        return None
    out = []
    for s in steps:
        per_run = []
        for r in runs:
            g = np.asarray(r[s]["gold_by_draw"])  # [draws, prompts]
            per_run.append(float(np.sum(g.var(axis=0, ddof=1) / len(g))) / g.shape[1] ** 2)
        out.append(float(np.sum(per_run)) / len(runs) ** 2)
    return out


# ----------------------------------------------------------------------------- fits and the prediction


def fit_curve(curve: dict[str, Any], form: str, cfg: OveroptStudyConfig):
    """Gao et al.'s law of ``form`` through the gold gains at d > 0, bootstrapped over prompts; None (said)
    where fewer than 2 distinct d > 0 were measured (a PPO run whose held-out KL never left 0)."""
    from alignlab.evaluate.overoptimization_fit import fit_overoptimization

    keep = [i for i, d in enumerate(curve["d"]) if d > 0]
    if len({curve["d"][i] for i in keep}) < 2:
        print(f"[study] {form}: fewer than 2 measurements with KL > 0 ({curve['d']}): no fit", flush=True)
        return None
    G = np.asarray([curve["gold"][i] for i in keep]).T  # [prompts, points]
    return fit_overoptimization(
        [curve["d"][i] for i in keep], per_prompt=G, form=form, n_boot=cfg.n_boot, seed=cfg.seed
    )


def predict(fits: dict[str, Any], sizes: dict[str, int], target: int, form: str) -> dict[str, Any]:
    """alpha, beta, d*, R* of an RM of size ``target`` (comparisons or parameters), from the smaller RMs' fits
    (alpha and beta linear in the log of the size). Two RMs: the line through both, its interval from the two
    fits' bootstrap draws (paired by index); this covers the fits' noise, not an RM's scatter around the line,
    which two points cannot measure. Three or more: ``fit_size_trend``'s prediction interval."""
    from alignlab.evaluate.overoptimization_fit import fit_size_trend, peak, percentile

    names = list(fits)
    if any(fits[n] is None for n in names):
        return {"form": form, "skipped": f"no fit for {[n for n in names if fits[n] is None]}: nothing to predict from"}
    logN = np.log([sizes[n] for n in names])
    a, b = np.array([fits[n].alpha for n in names]), np.array([fits[n].beta for n in names])
    if len(names) >= 3:
        trend = fit_size_trend(np.exp(logN), a, b, form=form, N_target=target)
        return {**trend.to_dict(), "method": "fit_size_trend (>= 3 RMs)"}
    x = (math.log(target) - logN[0]) / (logN[1] - logN[0])  # 1 at the second RM, > 1 past it

    def line(v0, v1):
        return v0 + (v1 - v0) * x

    est_a, est_b = line(a[0], a[1]), line(b[0], b[1])
    s0, s1 = fits[names[0]].samples, fits[names[1]].samples
    da, db = line(s0["alpha"], s1["alpha"]), line(s0["beta"], s1["beta"])
    d_s, r_s = peak(da, db, form)
    d0, r0 = peak(est_a, est_b, form)
    pred = {}
    for k, e, v in (("alpha", est_a, da), ("beta", est_b, db), ("d_star", d0, d_s), ("r_star", r0, r_s)):
        lo, hi = percentile(v, [2.5, 97.5])
        pred[k] = {"estimate": float(e), "lo": float(lo), "hi": float(hi)}
    return {
        "form": form,
        "method": "the line through 2 RMs in log size; interval: 95% of the two fits' bootstrap draws "
        "(prompt noise only: 2 points cannot show an RM's scatter around the line)",
        "N_target": target,
        "prediction": pred,
        "n_sizes": 2,
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def write_prediction(cfg: OveroptStudyConfig, fits: dict, rms: dict, target: str, inputs: list[Path]) -> dict:
    """prediction_pre.json, written before the target RM is measured; kept when it already exists."""
    path = Path(cfg.output_dir) / "prediction_pre.json"
    if path.is_file():
        return json.loads(path.read_text())
    sizes = {n: rms[n]["x"] for n in rms}
    pre = {
        "written_at": time.time(),
        "target_rm": target,
        "axis": cfg.axis,
        "target_size": sizes[target],
        "from_rms": {n: sizes[n] for n in fits["bon"]},
        "inputs_sha256": {str(p.relative_to(cfg.output_dir)): _sha(p) for p in inputs},
        "bon": predict(fits["bon"], sizes, sizes[target], "bon"),
        "rl": predict(fits["rl"], sizes, sizes[target], "rl"),
    }
    atomic_write_json(path, pre)
    return pre


def _float(x: float | str | None) -> float:
    """A number as written by ``atomic_write_json``: inf as "inf", NaN as null."""
    return math.nan if x is None else float(x)


def check_prediction(pre: dict, fits: dict, target: str) -> dict:
    """Predicted against measured d* and R* (and alpha, beta) of the target RM, and whether inside the interval."""
    out: dict[str, Any] = {"target_rm": target, "predicted_at": pre["written_at"]}
    for form in ("bon", "rl"):
        if "prediction" not in pre[form] or fits[form][target] is None:
            out[form] = {"skipped": pre[form].get("skipped") or f"no fit for {target}"}
            continue
        actual = fits[form][target].params
        out[form] = {
            k: {**p, "actual": actual[k], "inside": bool(_float(p["lo"]) <= actual[k] <= _float(p["hi"]))}
            for k, p in pre[form]["prediction"].items()
        }
    return out


# ----------------------------------------------------------------------------- the study


def _measure(cfg, ppo, name: str, rm: dict, samples: dict) -> dict[str, Any]:
    scores = bon_scores(cfg, name, rm["folder"], samples)
    bon = bon_curve({**samples, "scores": scores["scores"]}, ppo.no_eos_penalty)
    rl = rl_curve(run_ppo(cfg, ppo, name, rm["folder"]))
    return {"best_of_n": bon, "rl": rl}


def _fits(curves: dict, cfg) -> dict[str, dict[str, Any]]:
    return {
        "bon": {n: fit_curve(c["best_of_n"], "bon", cfg) for n, c in curves.items()},
        "rl": {n: fit_curve(c["rl"], "rl", cfg) for n, c in curves.items()},
    }


def _checks(curves: dict, cfg) -> dict[str, dict[str, Any]]:
    """Per form and RM: the law's R² on held-out points, and whether gold peaks then falls as the proxy rises."""
    from alignlab.evaluate.overoptimization_fit import heldout_r2, peak_then_fall

    out: dict[str, dict[str, Any]] = {}
    for form, key in (("bon", "best_of_n"), ("rl", "rl")):
        out[form] = {}
        for name, c in curves.items():
            curve = c[key]
            G, P = np.asarray(curve["gold"]).T, np.asarray(curve["proxy"]).T  # [prompts, points]
            out[form][name] = {
                "heldout_r2": heldout_r2(curve["d"], G.mean(axis=0), form),
                **peak_then_fall(G, P, n_boot=cfg.n_boot, seed=cfg.seed),
            }
            if curve.get("gold_noise_var") is not None or curve.get("gold_run_var") is not None:
                out[form][name]["r2_if_law_true"] = _r2_if_true(curve, G.mean(axis=0), form, cfg)
    return out


def _r2_if_true(curve: dict, R: np.ndarray, form: str, cfg) -> dict[str, Any]:
    """The held-out R² the law would score if true, with the sampling noise measured (``eval_draws`` per prompt:
    each point's own, and the start's, which every gain shares), with that of one draw per prompt (k x the
    variance), and (2+ runs) with the run-to-run spread (``runs``: paths and sampling, points independent):
    is a low R² the law's fault, or the measurement's?"""
    from alignlab.evaluate.overoptimization_fit import r2_if_law_true

    def simulate(var: np.ndarray, offset_var: float = 0.0) -> dict[str, Any] | None:
        return r2_if_law_true(curve["d"], R, form, var, offset_var=offset_var, seed=cfg.seed)

    out = {}
    if curve.get("gold_noise_var") is not None:
        var = np.asarray(curve["gold_noise_var"])
        out[f"{cfg.eval_draws}_draws"] = simulate(var, float(var[0]))
        out["1_draw"] = simulate(var * cfg.eval_draws, float(var[0]) * cfg.eval_draws)
    if curve.get("gold_run_var") is not None:
        out["runs"] = simulate(np.asarray(curve["gold_run_var"]))
    return out


def _trend(fits: dict, rms: dict, axis: str) -> dict[str, Any]:
    """alpha and beta against the log of the RMs' size (``axis``: comparisons or parameters) over every RM:
    slope and intercept of the least-squares line."""
    fitted = {n: f for n, f in fits.items() if f is not None}
    if len(fitted) < 2:
        return {"skipped": "fewer than 2 RMs have a fit"}
    logN = np.log([rms[n]["x"] for n in fitted])
    out = {}
    for k in ("alpha", "beta"):
        slope, intercept = np.polyfit(logN, [getattr(f, k) for f in fitted.values()], 1)
        out[k] = {"intercept": float(intercept), f"slope_per_log_{axis}": float(slope)}
    return out


def _points(curve: dict[str, Any]) -> dict[str, Any]:
    """The mean gains of a curve (what summary.json keeps and the figures draw)."""
    names = ("n", "step", "d", "kl", "picked_gold", "parts", "runs", "gold_noise_var", "gold_run_var")
    keep = {k: curve[k] for k in names if k in curve}
    return {
        **keep,
        "gold": [float(np.mean(g)) for g in curve["gold"]],
        "proxy": [float(np.mean(p)) for p in curve["proxy"]],
    }


def clear_pieces(out: Path) -> None:
    """Remove the study's pieces (not this run's config.yaml and lock; RUN/reward is outside ``out``)."""
    from alignlab.run_lock import LOCK_NAME

    for p in out.iterdir():
        if p.name not in ("config.yaml", LOCK_NAME):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


# What the study's pieces depend on: a finished piece made with other values is not this study's.
PIECE_SETTINGS = (
    "fractions", "rm_sizes", "prompts", "n_max", "iterations", "ppo_seeds", "eval_interval", "eval_draws",
    "kl_beta", "seed",
)  # fmt: skip
# settings added after studies were saved without them: their value then
ADDED_SETTINGS = {"rm_sizes": [], "ppo_seeds": 1, "eval_draws": 1}


def check_settings(cfg: OveroptStudyConfig, out: Path) -> None:
    """Refuse to reuse pieces made with other settings (``settings.json``): say which, and how to rerun."""
    now = {k: getattr(cfg, k) for k in PIECE_SETTINGS}
    if cfg.rm_sizes:
        now["fractions"] = None  # unused on the size axis
    path = out / "settings.json"
    if path.is_file():
        before = ADDED_SETTINGS | json.loads(path.read_text())
        changed = [f"{k} ({before.get(k)!r} -> {v!r})" for k, v in now.items() if before.get(k) != v]
        if changed:
            raise ConfigError(
                f"study overoptimization: {out} was made with other settings: {'; '.join(changed)}; "
                "add --redo true to rerun it, or give another --study_dir"
            )
    atomic_write_json(path, now)


def run(cfg: OveroptStudyConfig) -> dict:
    from alignlab.report import plots

    t0, out = time.time(), Path(cfg.output_dir)
    run_dir = Path(cfg.run_dir)
    _need(run_dir / "sft", "the SFT policy", run_dir)
    heldout_rows(cfg)  # enough test prompts, before anything is trained
    if cfg.redo:
        clear_pieces(out)
    check_settings(cfg, out)
    rms = train_rms(cfg)
    names = list(rms)  # smallest first
    target = names[-1]
    ppo = _ppo_base(cfg)
    samples = bon_samples(cfg, ppo)
    samples = {**samples, "parts": bon_parts(cfg, ppo, samples)}
    curves = {n: _measure(cfg, ppo, n, rms[n], samples) for n in names[:-1]}
    inputs = [out / "best_of_n" / "samples.json"]
    inputs += [out / "best_of_n" / f"{n}.json" for n in names[:-1]]
    inputs += [f / "heldout_curve.jsonl" for n in names[:-1] for f in ppo_folders(cfg, n)]
    pre = write_prediction(cfg, _fits(curves, cfg), rms, target, inputs)
    curves[target] = _measure(cfg, ppo, target, rms[target], samples)  # measured only after the prediction
    fits = _fits(curves, cfg)
    checked = check_prediction(pre, fits, target)
    atomic_write_json(out / "prediction.json", checked)
    fit_json = {
        form: {n: f.to_dict() if f else None for n, f in fits[form].items()}
        | {f"trend_in_log_{cfg.axis}": _trend(fits[form], rms, cfg.axis)}
        for form in fits
    }
    checks = _checks(curves, cfg)
    for form in fit_json:
        fit_json[form]["checks"] = checks[form]
    atomic_write_json(out / "fit.json", fit_json)
    points = {n: {k: _points(c[k]) for k in c} for n, c in curves.items()}
    params = {form: {n: f.params if f else None for n, f in fits[form].items()} for form in fits}
    summary = {
        "run_dir": str(run_dir),
        "axis": cfg.axis,
        "rms": rms,
        "prompts": cfg.prompts,
        "n_max": cfg.n_max,
        "ppo": {
            "iterations": cfg.iterations,
            "eval_interval": cfg.eval_interval,
            "kl_beta": cfg.kl_beta,
            "seeds": cfg.ppo_seeds,
            "eval_draws": cfg.eval_draws,
        },
        "points": points,
        "fits": params,
        "fit_intervals": {form: {n: f.intervals if f else None for n, f in fits[form].items()} for form in fits},
        "checks": checks,
        "parts_at_peak": {n: {k: parts_at_peak(c[k]) for k in c} for n, c in curves.items()},
        "constant_answers": constant_answer_gains(cfg, ppo, samples),
        "prediction": checked,
        "seconds": round(time.time() - t0, 1),
    }
    plots.overoptimization(points, params, "best_of_n", out / "best_of_n.png", summary["constant_answers"])
    plots.overoptimization(points, params, "rl", out / "rl.png", summary["constant_answers"])
    for method in ("best_of_n", "rl"):
        if all(p[method].get("parts") for p in points.values()):
            plots.overoptimization_parts(points, method, out / f"{method}_parts.png", summary["constant_answers"])
    atomic_write_json(out / "summary.json", summary)
    print_summary(summary)
    return summary


def print_summary(s: dict[str, Any]) -> None:
    print(f"[study] RM ({s.get('axis', 'comparisons')}): best-of-n alpha, beta, d*; RL alpha, beta, d*")

    def params(f: dict | None) -> str:
        return "no fit" if f is None else f"{f['alpha']:.3f}, {f['beta']:.3f}, {f['d_star']:.3g}"

    def held(form: str, n: str) -> str:
        c = s["checks"][form][n]
        r2 = c["heldout_r2"]["r2"]
        return f"held-out R2 {'n/a' if r2 is None else f'{r2:.2f}'}, {'peaks then falls' if c['falls'] else 'gold ends at its peak value on every prompt' if c.get('stalled') else 'no fall'}"

    draws = s["ppo"].get("eval_draws", 1)
    for n, rm in s["rms"].items():
        acc = rm.get("gold_accuracy")
        agree = "" if acc is None else f", agrees with gold on {100 * acc:.1f}%"
        fits = f"bon {params(s['fits']['bon'][n])}; rl {params(s['fits']['rl'][n])}"
        print(f"  {n:<12} ({rm.get('x', rm['comparisons'])}{agree}) {fits}")
        print(f"  {'':<12} bon: {held('bon', n)}; rl: {held('rl', n)}")
        sims = s["checks"]["rl"][n].get("r2_if_law_true") or {}
        said = [f"{sims[k]['median']:.2f} [{sims[k]['lo']:.2f}, {sims[k]['hi']:.2f}] {how}" for k, how in
                ((f"{draws}_draws", f"with {draws} draws"), ("1_draw", "with one"), ("runs", "with the runs' spread"))
                if sims.get(k)]  # fmt: skip
        if said:
            print(f"  {'':<12} rl held-out R2 if the law were true: {'; '.join(said)}")
        for form, a in (s.get("parts_at_peak") or {}).get(n, {}).items():
            if a:
                cells = ", ".join(f"{c} {a['to_peak'][c]:+.3f}/{a['after_peak'][c]:+.3f}" for c in a["to_peak"])
                print(f"  {'':<12} {form} gold parts, to its peak/after it: {cells}")
    if s.get("constant_answers"):
        said = ", ".join(f"{y!r} {g:+.3f}" for y, g in s["constant_answers"].items())
        print(f"[study] gold gain over SFT of one answer given to every prompt: {said}")
    p = s["prediction"]
    for form in ("bon", "rl"):
        if "skipped" in p[form]:
            print(f"[study] {form}: no prediction ({p[form]['skipped']})")
            continue
        d = {k: _float(v) for k, v in p[form]["d_star"].items() if k != "inside"}
        print(
            f"[study] {form} d* of {p['target_rm']}: predicted {d['estimate']:.3g} [{d['lo']:.3g}, {d['hi']:.3g}], "
            f"measured {d['actual']:.3g} ({'inside' if p[form]['d_star']['inside'] else 'outside'})"
        )
