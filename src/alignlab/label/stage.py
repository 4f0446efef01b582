"""``alignlab label``: serve the ranking page until stopped, or (``--stats FILE``) report on a rankings file.

Serving reads the prompts and their responses (from the data, or sampled from ``policies``), opens the
rankings file (resuming each labeler where they stopped), prints the URL and answers until Ctrl-C; the
summary says what this session added. The stats mode prints a table and writes it as JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alignlab.errors import ConfigError, DataError, MissingInputError
from alignlab.label import stats
from alignlab.label.config import LabelConfig
from alignlab.label.items import Item, load_prompt_rows, make_items, responses_of
from alignlab.label.server import LabelApp, LabelServer, is_loopback, url_of
from alignlab.label.store import RankingStore, read_rankings
from alignlab.outputs import atomic_write_json


def run(cfg: LabelConfig) -> dict:
    return report_stats(cfg) if cfg.stats else serve(cfg)


def collect_items(cfg: LabelConfig) -> tuple[list[Item], int]:
    """The items to rank and how many data rows gave none (under two responses, or a repeat)."""
    rows = load_prompt_rows(cfg.data, cfg.split, cfg.max_prompts)
    if cfg.policies:
        from alignlab.label.sampling import sample_responses

        responses = sample_responses(cfg, [r["prompt"] for r in rows])
    else:
        responses = responses_of(rows, cfg.data)
    items, left_out = make_items(rows, responses)
    if not items:
        raise DataError(f"{cfg.data}: no prompt has two responses to rank")
    return items, left_out


def start_server(app: LabelApp, host: str, port: int) -> LabelServer:
    try:
        return LabelServer(app, host, port)
    except OSError as e:
        raise ConfigError(
            f"label: cannot serve on {host}:{port} ({e.strerror or e}); pick another --port (0 = any)"
        ) from None


def serve(cfg: LabelConfig) -> dict:
    if cfg.rankings.suffix != ".jsonl":
        raise ConfigError(f"label: 'output' {str(cfg.rankings)!r} must end in .jsonl (the reward stage reads it so)")
    items, left_out = collect_items(cfg)
    store = RankingStore(cfg.rankings)
    app = LabelApp(items, store, cfg.labeler, cfg.seed)
    server = start_server(app, cfg.host, cfg.port)
    if not is_loopback(cfg.host):
        print(
            f"label: WARNING: serving on {cfg.host}, not loopback: anyone who can reach this machine can read the "
            "prompts and responses and add rankings under any name (there is no login)",
            file=sys.stderr,
            flush=True,
        )
    who = (
        f"labeler {cfg.labeler}: {app.progress(cfg.labeler)['done']} done"
        if cfg.labeler
        else "labelers named on the page"
    )
    print(
        f"label: {len(items)} prompts ({left_out} data rows left out: under 2 responses or repeated); {who}; "
        f"rankings -> {cfg.rankings}",
        flush=True,
    )
    print(f"label: open {url_of(cfg.host, server.server_address[1])}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"\nlabel: stopped; {app.submitted} ranking(s) added this session", flush=True)
    finally:
        server.server_close()
    return {
        "rankings": str(cfg.rankings),
        "prompts": len(items),
        "rows_left_out": left_out,
        "submitted": app.submitted,
        "labelers": dict(sorted(store.counts.items())),
    }


def report_stats(cfg: LabelConfig) -> dict:
    path = Path(cfg.stats)
    if not path.is_file():
        raise MissingInputError(f"label: rankings file not found: {path}")
    if cfg.stats_json.suffix != ".json":
        raise ConfigError(f"label: 'output' {str(cfg.stats_json)!r} must end in .json with --stats")
    rows, _ = read_rankings(path)
    if not rows:
        raise DataError(f"{path}: no rankings")
    s = stats.report(rows, str(path))
    print("\n".join(stats.table(s)))
    atomic_write_json(cfg.stats_json, s)
    print(f"label: wrote {cfg.stats_json}")
    return {
        "json": str(cfg.stats_json),
        "rankings": s["rankings"],
        "labelers": s["labelers"],
        "agreement": s["agreement"],
    }
