"""PPO's held-out evaluation: the policy sampled on a fixed set of held-out prompts, scored by the RM and
the gold judge, plus its LM loss on held-out pretraining text.

The same prompts with the same sampling seed before, during (``eval.interval``) and after training, so
two measurements differ only by the policy. With ``eval.greedy`` each measurement also decodes greedily
(keys ``*_greedy``). The sampled decoding also measures KL(policy || reference) on these prompts
(``heldout_kl``): the d = sqrt(KL) of Gao et al.'s over-optimisation curves, on prompts never trained on.
With ``eval.interval`` every measurement's per-prompt gold, RM score and KL go to ``heldout_curve.jsonl``
(the over-optimisation study bootstraps its fits over these prompts)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignlab.evaluate.heldout_samples import sample_and_score
from alignlab.evaluate.heldout_set import heldout_seed, sampling_note

METRICS = ("rm_score", "gold", "eos_frac", "response_len", "kl")
CURVE_FILE = "heldout_curve.jsonl"


@dataclass
class Heldout:
    metrics: dict[str, float] = field(default_factory=dict)  # heldout_rm_score, heldout_gold, ... (+ *_greedy)
    gold_scores: dict[str, list[float]] = field(default_factory=dict)  # per prompt, by decoding ("", "_greedy")
    sampled: dict[str, Any] | None = None  # sample_and_score's result of the sampled decoding (texts, scores)


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
        c = self.cfg
        for suffix, temp in self.decodings:
            r = sample_and_score(
                policy,
                self.tok,
                self.rows,
                prompt_column=c.prompt_column,
                max_prompt_len=self.max_prompt_len,
                max_new_tokens=c.rollout.max_new_tokens,
                temperature=temp,
                seed=heldout_seed(c.run.seed),
                batch_size=c.rollout.gen_batch_size,
                rm=rm,
                judge=self.judge,
                kl_to_reference=True,
                ref=self.ref,
            )
            h.metrics.update({f"heldout_{k}{suffix}": r[k] for k in METRICS if k in r})
            if "gold_scores" in r:
                h.gold_scores[suffix] = r["gold_scores"]
            if not suffix:
                h.sampled = r
        return h

    def record_curve(self, out: Path, step: int, h: Heldout) -> None:
        """Append the sampled decoding's per-prompt gold, RM score and KL at ``step`` (only with ``eval.interval``:
        a run that asks for a curve). A resumed run may repeat a step; its reader keeps the last line of each."""
        r = h.sampled
        if not self.cfg.eval.interval or r is None:
            return
        row = {"step": step, **{k: r[f"{k}_scores"] for k in ("gold", "rm", "kl") if f"{k}_scores" in r}}
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
        r = h.sampled
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
        return f"{how}, first {e.prompts} rows of {source}" + ("; *_greedy: greedy decoding" if e.greedy else "")

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
