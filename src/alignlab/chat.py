"""``alignlab chat MODEL [MODEL ...]``: ask several models the same prompt and read their answers side by side.

Type a prompt; every model answers it (the same sampling settings and seed for each), in columns, with
its reward-model score when ``--reward_model`` is given and, when the prompt is one of the built-in
world's prompts (``--world_dir``), the gold score its labelers give. ``/quit`` (or end of input) leaves;
``/help`` lists the commands. Input may also be piped: one prompt per line.

    alignlab chat runs/default/sft runs/default/ppo_ptx --reward_model runs/default/reward \\
        --world_dir runs/default/world
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from alignlab.config import apply, arg, help_lines, parse_overrides, resolve
from alignlab.data.chat import encode_prompt
from alignlab.errors import ConfigError, UserError
from alignlab.models.load import load_causal_lm, load_tokenizer
from alignlab.models.reward_model import load_reward_model, score_texts
from alignlab.rollout.generate import generate_responses
from alignlab.training import resolve_device

WORLD_SPLITS = ("test", "sft", "rm", "ppo")  # the world's prompt folders a typed prompt is looked up in
HELP = "/quit leaves; /help shows this; any other line is a prompt every model answers"


@dataclass
class ChatConfig:
    models: list[str] = arg(factory=list, help="models to ask (paths or hub ids); also given positionally")
    names: list[str] = arg(factory=list, help="a column title per model (default: each model's folder name)")
    reward_model: str = arg("", "score every answer with this reward model")
    world_dir: str = arg("", "the built-in world: a prompt that is one of its prompts also gets its gold score")
    max_new_tokens: int = arg(96, "longest answer, in tokens")
    temperature: float = arg(0.7, "sampling temperature (0 = greedy)")
    seed: int = arg(0, "sampling seed (the same for every model and every prompt, so answers can be compared)")
    device: str = arg("auto", "auto, cpu or cuda")
    width: int = arg(0, "screen width in characters (0 = the terminal's)")
    trust_remote_code: bool = arg(False, "allow custom modelling code from the hub")


@dataclass
class Answer:
    name: str
    text: str
    scores: dict[str, float] = field(default_factory=dict)  # "rm", "gold"


@dataclass
class Panel:
    """The models that answer, and the judges that score their answers."""

    names: list[str]
    models: list[Any]
    tokenizers: list[Any]
    rm: Any = None
    rm_tok: Any = None
    world: Any = None  # (WorldJudge, {prompt: record}) when a world is given


def load_panel(cfg: ChatConfig) -> Panel:
    device = resolve_device(cfg.device)
    trust = cfg.trust_remote_code
    models = [load_causal_lm(m, trust).to(device).eval() for m in cfg.models]
    toks = [load_tokenizer(m, trust, what="model") for m in cfg.models]
    names = cfg.names or [Path(m).name or m for m in cfg.models]
    panel = Panel(names, models, toks)
    if cfg.reward_model:
        panel.rm = load_reward_model(cfg.reward_model, trust).to(device).eval()
        panel.rm_tok = load_tokenizer(cfg.reward_model, trust, what="reward model")
    if cfg.world_dir:
        panel.world = _world_prompts(cfg.world_dir)
    return panel


def _world_prompts(world_dir: str):
    """The world's gold judge and its prompts by text (a typed prompt found there can be scored)."""
    import datasets

    from alignlab.evaluate.heldout_set import world_judge

    judge, records = world_judge(world_dir), {}
    for folder in WORLD_SPLITS:
        path = Path(world_dir) / folder
        if not path.is_dir():
            continue
        for split in datasets.load_from_disk(str(path)).values():
            for row in split:
                if isinstance(row.get("prompt"), str) and "meta" in row:
                    records.setdefault(row["prompt"].strip(), row)
    return judge, records


@torch.no_grad()
def answer(panel: Panel, cfg: ChatConfig, prompt: str) -> list[Answer]:
    answers = []
    for name, model, tok in zip(panel.names, panel.models, panel.tokenizers):
        ro = generate_responses(
            model,
            tok,
            [encode_prompt(tok, prompt)],
            cfg.max_new_tokens,
            temperature=cfg.temperature,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            seed=cfg.seed,
        )
        answers.append(Answer(name, ro.texts[0].strip()))
    if panel.rm is not None:
        rm = score_texts(panel.rm, panel.rm_tok, [prompt] * len(answers), [a.text for a in answers])
        for a, s in zip(answers, rm.tolist()):
            a.scores["rm"] = s
    if panel.world is not None:
        judge, records = panel.world
        record = records.get(prompt.strip())
        if record is not None:
            for a, g in zip(answers, judge.gold([record] * len(answers), [a.text for a in answers])):
                a.scores["gold"] = g
    return answers


def render(answers: list[Answer], width: int) -> str:
    """The answers in columns, each titled with its model's name and scores."""
    gap = 3
    col = max(20, (width - gap * (len(answers) - 1)) // len(answers))
    blocks = []
    for a in answers:
        title = a.name + "".join(f"  {k} {v:+.2f}" for k, v in a.scores.items())
        body = [line for para in (a.text or "(empty)").splitlines() for line in textwrap.wrap(para, col) or [""]]
        blocks.append([title[:col], "-" * min(col, max(len(title), 8)), *body])
    height = max(len(b) for b in blocks)
    rows = []
    for i in range(height):
        cells = [(b[i] if i < len(b) else "").ljust(col) for b in blocks]
        rows.append((" " * gap).join(cells).rstrip())
    return "\n".join(rows)


def converse(panel: Panel, cfg: ChatConfig, stdin: TextIO, stdout: TextIO) -> int:
    """Read prompts until /quit or the end of input; print each round of answers. Returns the prompts answered."""
    width = cfg.width or shutil.get_terminal_size((120, 40)).columns
    interactive = stdin.isatty()
    n = 0
    while True:
        if interactive:
            stdout.write("you> ")
            stdout.flush()
        line = stdin.readline()
        if not line or line.strip() == "/quit":
            return n
        prompt = line.strip()
        if not prompt:
            continue
        if prompt == "/help":
            stdout.write(HELP + "\n")
            continue
        if panel.world is not None and prompt not in panel.world[1]:
            stdout.write("(not one of the world's prompts: no gold score)\n")
        stdout.write(render(answer(panel, cfg, prompt), width) + "\n\n")
        stdout.flush()
        n += 1


def parse(argv: Sequence[str]) -> ChatConfig | None:
    """The config from ``MODEL ... --key value ...`` (None: --help was printed)."""
    argv = list(argv)
    positional = []
    while argv and not argv[0].startswith("-"):
        positional.append(argv.pop(0))
    overrides, preset, config, wants_help = parse_overrides(argv)
    if wants_help:
        print(__doc__.strip().splitlines()[0] + "\n\nkeys:\n" + "\n".join(help_lines(ChatConfig)))
        return None
    cfg = resolve(ChatConfig, {}, preset, config, overrides)
    if positional:
        cfg = apply(cfg, {"models": cfg.models + positional}, "command line")
    check(cfg)
    return cfg


def check(cfg: ChatConfig) -> None:
    """Refuse settings no prompt can be answered with (after the positional models are in)."""
    if not cfg.models:
        raise ConfigError("give at least one model: alignlab chat MODEL [MODEL ...]")
    if cfg.names and len(cfg.names) != len(cfg.models):
        raise ConfigError(f"names: {len(cfg.names)} titles for {len(cfg.models)} models; give one per model")
    if cfg.temperature < 0 or cfg.max_new_tokens < 1:
        raise ConfigError("temperature must be >= 0 and max_new_tokens >= 1")


def main(argv: Sequence[str], stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    try:
        cfg = parse(argv)
        if cfg is None:
            return 0
        panel = load_panel(cfg)
    except UserError as e:
        print(f"alignlab chat: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    out = stdout or sys.stdout
    out.write(f"{len(panel.names)} model(s): {', '.join(panel.names)}. {HELP}\n")
    converse(panel, cfg, stdin or sys.stdin, out)
    return 0
