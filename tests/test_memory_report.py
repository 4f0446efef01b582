"""ALIGNLAB_MEMORY_REPORT (training.write_memory_report): what benchmarks/fsdp_memory.py reads. The bytes
come from the live tensors after the optimiser step, each storage once (a tied weight counts once), and
nothing is written when the variable is unset."""

from __future__ import annotations

import json

import torch
from torch import nn

from alignlab.training import NonFiniteGuard, guarded_step, held_bytes


class _Sched:
    def step(self) -> None:
        pass


class _Acc:
    def clip_grad_norm_(self, params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


def _step(tmp_path):
    torch.manual_seed(0)
    emb, head = nn.Embedding(10, 4), nn.Linear(4, 10)
    head.weight = emb.weight  # tied: one storage, counted once
    model = nn.Sequential(emb, head)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([1, 2, 3])).sum().backward()
    guarded_step(_Acc(), model.parameters(), opt, _Sched(), 1.0, NonFiniteGuard("t", tmp_path), 7)
    return model, opt


def test_memory_report_counts_live_tensors_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_MEMORY_REPORT", str(tmp_path / "mem"))
    model, opt = _step(tmp_path)
    report = json.loads((tmp_path / "mem" / "memory.rank0.json").read_text())
    weights = (10 * 4 + 10) * 4  # the tied matrix once, the head's bias
    assert report["step"] == 7 and report["param_bytes"] == weights and report["grad_bytes"] == weights
    assert report["optimizer_bytes"] == 2 * weights + 2 * 4  # exp_avg, exp_avg_sq, a float32 step per parameter
    assert report["rss_bytes"] > 0 and report["peak_rss_bytes"] > 0
    assert held_bytes(model.parameters(), opt)["grad_bytes"] == 0  # cleared after the report


def test_no_memory_report_when_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGNLAB_MEMORY_REPORT", raising=False)
    _step(tmp_path)
    assert not list(tmp_path.rglob("memory.rank*.json"))
