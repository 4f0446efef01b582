"""What the built world's prompts and demonstrations look like, for ``stats.json``.

* use-case categories (InstructGPT's Table 1) and their shares beside the paper's;
* explicit constraints and closed-domain prompts per split (its Table 7);
* per demonstrator: share of the SFT rows, mean gold reward of what they wrote, and how often
  the held-out labelers would prefer the careful answer to theirs. The last is the headroom
  that behaviour alone leaves for RLHF: a policy as capable as SFT that always wrote like the
  careful demonstrator would win about this often against demonstrations of the mixture.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

from alignlab.world.labelers import score_response
from alignlab.world.tasks import CLOSED_DOMAIN, INSTRUCTGPT_CATEGORY_SHARES


def _shares(counter: Counter, total: int) -> dict[str, float]:
    return {k: round(v / max(total, 1), 4) for k, v in sorted(counter.items())}


def categories(rows: list[dict]) -> dict[str, Any]:
    counts = Counter(r["category"] for r in rows)
    return {"shares": _shares(counts, len(rows)), "instructgpt_table1": INSTRUCTGPT_CATEGORY_SHARES}


def constraints_and_closed(splits: dict[str, list[dict]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rows in splits.items():
        metas = [json.loads(r["meta"]) for r in rows]
        kinds = Counter(m["constraint"]["kind"] for m in metas if m.get("constraint"))
        out[name] = {
            "prompts": len(rows),
            "constrained": round(sum(kinds.values()) / max(len(rows), 1), 4),
            "heldout_kind": round(
                sum(1 for m in metas if m.get("constraint", {}).get("heldout")) / max(len(rows), 1), 4
            ),
            "closed_domain": round(sum(1 for r in rows if r["cluster"] == CLOSED_DOMAIN) / max(len(rows), 1), 4),
            "kinds": dict(sorted(kinds.items())),
        }
    return out


def _bt_preference(world, personas: list[dict], rec: dict, a: str, b: str) -> float:
    """Held-out-style expected preference of ``a`` over ``b`` (Bradley-Terry, mean over ``personas``)."""
    if a == b:
        return 0.5
    ca, cb = score_response(world, rec, a), score_response(world, rec, b)
    ps = []
    for p in personas:
        d = sum(p["weights"][k] * (ca[k] - cb[k]) for k in ca) / p["tau"]
        ps.append(1.0 / (1.0 + np.exp(-d)))
    return float(np.mean(ps))


def demonstrators(world, sft_rows: list[dict]) -> dict[str, Any]:
    """Per demonstrator: share, mean gold (training and held-out labelers), careful's win rate over them."""
    train, heldout = world.training_personas(), world.heldout_personas()
    by: dict[str, list[tuple[float, float, float]]] = {}
    for rec in sft_rows:
        meta = json.loads(rec["meta"])
        comps = score_response(world, rec, rec["completion"])
        gold = float(np.mean([sum(p["weights"][k] * comps[k] for k in comps) for p in train]))
        gold_h = float(np.mean([sum(p["weights"][k] * comps[k] for k in comps) for p in heldout]))
        win = _bt_preference(world, heldout, rec, meta["reference"], rec["completion"])
        by.setdefault(meta.get("demonstrator", "careful"), []).append((gold, gold_h, win))
    n = len(sft_rows)
    out = {
        name: {
            "share": round(len(v) / max(n, 1), 4),
            "rows": len(v),
            "mean_gold": round(float(np.mean([x[0] for x in v])), 4),
            "mean_gold_heldout": round(float(np.mean([x[1] for x in v])), 4),
            "careful_win_rate_heldout": round(float(np.mean([x[2] for x in v])), 4),
        }
        for name, v in sorted(by.items())
    }
    every = [x for v in by.values() for x in v]
    overall = {
        "mean_gold": round(float(np.mean([x[0] for x in every])), 4) if every else None,
        "careful_win_rate_heldout": round(float(np.mean([x[2] for x in every])), 4) if every else None,
    }
    return {"by_demonstrator": out, "all": overall}
