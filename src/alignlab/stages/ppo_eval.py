"""PPO's held-out evaluation: the policy sampled on a fixed set of held-out prompts, scored by the RM and
the gold judge, plus its LM loss on held-out pretraining text.

The same prompts with the same sampling seed before, during (``eval.interval``) and after training, so
two measurements differ only by the policy. With ``eval.greedy`` each measurement also decodes greedily
(keys ``*_greedy``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from alignlab.evaluate.heldout_samples import sample_and_score
from alignlab.evaluate.heldout_set import heldout_seed, sampling_note

METRICS = ("rm_score", "gold", "eos_frac", "response_len")


@dataclass
class Heldout:
    metrics: dict[str, float] = field(default_factory=dict)  # heldout_rm_score, heldout_gold, ... (+ *_greedy)
    gold_scores: dict[str, list[float]] = field(default_factory=dict)  # per prompt, by decoding ("", "_greedy")
    sampled: dict[str, Any] | None = None  # sample_and_score's result of the sampled decoding (texts, scores)


class HeldoutEval:
    def __init__(self, cfg, inputs, tokenizer, device):
        self.cfg, self.tok, self.device = cfg, tokenizer, device
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
            )
            h.metrics.update({f"heldout_{k}{suffix}": r[k] for k in METRICS if k in r})
            if "gold_scores" in r:
                h.gold_scores[suffix] = r["gold_scores"]
            if not suffix:
                h.sampled = r
        return h

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

    def initial_record(self, policy, rm) -> dict[str, Any]:
        """The starting point, as the checkpoint keeps it: held-out metrics, per-prompt gold, pretraining
        loss and samples of the policy before training."""
        h = self(policy, rm)
        return {
            **h.metrics,
            "gold_scores": h.gold_scores,
            "pretrain_loss": self.pretrain_loss(policy),
            "samples": self.samples(h),
        }
