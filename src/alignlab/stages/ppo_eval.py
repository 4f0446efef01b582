"""PPO's held-out evaluation: the policy sampled on a fixed set of held-out prompts, scored by the RM and
the gold judge, plus its LM loss on held-out pretraining text.

The same prompts with the same sampling seed before, during (``eval.interval``) and after training, so
two measurements differ only by the policy. With ``eval.greedy`` each measurement also decodes greedily
(keys ``*_greedy``). The sampled decoding also measures KL(policy || reference) on these prompts
(``heldout_kl``): the d = sqrt(KL) of Gao et al.'s over-optimisation curves, on prompts never trained on.
With ``eval.interval`` every measurement's per-prompt gold (also split by gold's components), RM score and KL
go to ``heldout_curve.jsonl`` (the over-optimisation study bootstraps its fits over these prompts).
``eval.draws`` samples each prompt that many times per measurement and scores the mean, the first draw being
the one-draw measurement; with 2+ the curve also keeps every draw's gold, whose spread is the measurement's
own sampling noise."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignlab.evaluate.heldout_samples import sample_and_score
from alignlab.evaluate.heldout_set import heldout_seed, sampling_note
from alignlab.world import COMPONENTS

METRICS = ("rm_score", "gold", "eos_frac", "response_len", "kl")
CURVE_FILE = "heldout_curve.jsonl"


# Draw j of a measurement samples with seed heldout_seed(seed) + j * this: far beyond any run seed, so no draw of
# one run replays the first draw of a run with another seed (the study averages runs of seeds s, s+1, ...).
DRAW_SEED_STRIDE = 1_000_003


def mean_of_draws(draws: list[dict[str, Any]]) -> dict[str, Any]:
    """One measurement from several draws on the same prompts: each per-prompt list and each mean averaged over
    the draws, so a prompt counts once; ``texts`` are the first draw's, ``gold_by_draw`` keeps every draw's gold."""
    first = draws[0]
    if len(draws) == 1:
        return first
    out: dict[str, Any] = {"texts": first["texts"]}
    for k, v in first.items():
        if isinstance(v, list) and k != "texts":
            out[k] = [statistics.fmean(col) for col in zip(*(d[k] for d in draws))]
        elif isinstance(v, (int, float)):
            out[k] = statistics.fmean(d[k] for d in draws)
    if "gold_scores" in first:
        out["gold_by_draw"] = [d["gold_scores"] for d in draws]
    return out


@dataclass
class Heldout:
    metrics: dict[str, float] = field(default_factory=dict)  # heldout_rm_score, heldout_gold, ... (+ *_greedy)
    gold_scores: dict[str, list[float]] = field(default_factory=dict)  # per prompt, by decoding ("", "_greedy")
    sampled: dict[str, Any] | None = None  # the sampled decoding's scores (mean_of_draws of sample_and_score's)
    first_draw: dict[str, Any] | None = None  # its first draw: texts with their own scores (samples.json)


class HeldoutEval:
    def __init__(self, cfg, inputs, tokenizer, device, ref=None):
        self.cfg, self.tok, self.device = cfg, tokenizer, device
        self.ref = ref  # the KL reference (None: the policy with its LoRA adapter off)
        self.rows, self.ptx_eval, self.max_prompt_len = inputs.eval_rows, inputs.ptx_eval, inputs.max_prompt_len
        self.info, self.ptx_info = inputs.heldout, inputs.heldout_ptx  # where the rows and the ptx blocks came from
        self.judge = inputs.judge if self.rows and "meta" in self.rows[0] else None  # gold needs the world's rows
        temp = cfg.eval.temperature
        self.decodings = [("", temp)] + ([("_greedy", 0.0)] if cfg.eval.greedy and temp > 0 else [])

    def __call__(self, policy, rm) -> Heldout:
        """Sample ``policy`` on the held-out prompts; empty without any (eval.prompts 0, or no eval data)."""
        h = Heldout()
        if not self.rows:
            return h
        for suffix, temp in self.decodings:
            draws = self.cfg.eval.draws if temp > 0 else 1  # greedy decoding has one answer
            rs = [self._draw(policy, rm, temp, j) for j in range(draws)]
            r = mean_of_draws(rs)
            h.metrics.update({f"heldout_{k}{suffix}": r[k] for k in METRICS if k in r})
            if "gold_scores" in r:
                h.gold_scores[suffix] = r["gold_scores"]
            if not suffix:
                h.sampled, h.first_draw = r, rs[0]
        return h

    def _draw(self, policy, rm, temperature: float, j: int) -> dict[str, Any]:
        """Draw ``j`` of the held-out answers: the same seed at every measurement, another for each draw."""
        c = self.cfg
        return sample_and_score(
            policy,
            self.tok,
            self.rows,
            prompt_column=c.prompt_column,
            max_prompt_len=self.max_prompt_len,
            max_new_tokens=c.rollout.max_new_tokens,
            temperature=temperature,
            seed=heldout_seed(c.run.seed) + j * DRAW_SEED_STRIDE,
            batch_size=c.rollout.gen_batch_size,
            rm=rm,
            judge=self.judge,
            kl_to_reference=True,
            ref=self.ref,
            gold_parts=bool(c.eval.interval),  # a curve is asked for: keep what its gold is made of
        )

    def record_curve(self, out: Path, step: int, h: Heldout) -> None:
        """Append the sampled decoding's per-prompt gold, RM score and KL at ``step`` (only with ``eval.interval``:
        a run that asks for a curve). A resumed run may repeat a step; its reader keeps the last line of each."""
        r = h.sampled
        if not self.cfg.eval.interval or r is None:
            return
        row = {"step": step, **{k: r[f"{k}_scores"] for k in ("gold", "rm", "kl") if f"{k}_scores" in r}}
        parts = {c: r[f"gold_{c}_scores"] for c in COMPONENTS if f"gold_{c}_scores" in r}
        if parts:
            row["gold_parts"] = parts  # the study splits each gold gain by component
        if len(r.get("gold_by_draw", ())) > 1:
            row["gold_by_draw"] = r["gold_by_draw"]  # the study measures the sampling noise from the draws' spread
        with open(out / CURVE_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")

    @torch.no_grad()
    def pretrain_loss(self, policy) -> float | None:
        """Mean per-token LM loss on the held-out pretraining blocks; None without ptx.data."""
        if self.ptx_eval is None:
            return None
        x_all = self.ptx_eval.to(self.device)
        losses = [policy(input_ids=x, labels=x, use_cache=False).loss.item() * x.shape[0] for x in x_all.split(16)]
        return sum(losses) / self.ptx_eval.shape[0]

    def samples(self, h: Heldout, n: int = 8) -> list[dict[str, Any]] | None:
        """The first ``n`` held-out prompts with the sampled response and its scores (samples.json)."""
        r = h.first_draw
        if self.rows is None or r is None:
            return None
        out = []
        for i in range(min(n, len(self.rows))):
            s = {"prompt": self.rows[i].get("prompt"), "response": r["texts"][i]}
            if "rm_scores" in r:
                s["rm_score"] = round(r["rm_scores"][i], 4)
            if "gold_scores" in r:
                s["gold"] = round(r["gold_scores"][i], 4)
            out.append(s)
        return out

    def description(self) -> str:
        """How the held-out responses are sampled, in words (summary.json's heldout_sampling)."""
        c, e = self.cfg, self.cfg.eval
        how = sampling_note(e.temperature, c.run.seed)
        info = self.info
        source = "-" if info.how == "none" else info.source + (f" ({info.split})" if info.how == "fraction" else "")
        draws = f", {e.draws} draws per prompt (their mean)" if e.draws > 1 else ""
        greedy = "; *_greedy: greedy decoding" if e.greedy else ""
        return f"{how}{draws}, first {e.prompts} rows of {source}{greedy}"

    def records(self) -> dict[str, Any]:
        """summary.json's ``heldout`` (the prompts) and ``heldout_ptx`` (the pretraining text, with ptx.data)."""
        out = {"heldout": self.info.as_dict()}
        if self.ptx_info is not None:
            out["heldout_ptx"] = self.ptx_info.as_dict()
        return out

    def initial_record(self, policy, rm, out: Path | None = None) -> dict[str, Any]:
        """The starting point, as the checkpoint keeps it: held-out metrics, per-prompt gold, pretraining
        loss and samples of the policy before training (its curve line in ``out``, when given)."""
        h = self(policy, rm)
        if out is not None:
            self.record_curve(out, 0, h)
        return {
            **h.metrics,
            "gold_scores": h.gold_scores,
            "pretrain_loss": self.pretrain_loss(policy),
            "samples": self.samples(h),
        }
