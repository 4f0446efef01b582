"""alignlab label: the ranking page, its server, the rankings file, the labelers' agreement, and ties in the reward
stage. Pure pieces first (order, checks, the file, the stats), then the server over HTTP, sampling from policies,
rankings that train the reward model, and a real Chromium driving the page (skipped without one)."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from alignlab.cli import main as cli_main
from alignlab.config import ConfigError, resolve
from alignlab.errors import DataError
from alignlab.label import stats
from alignlab.label.config import PRESETS, LabelConfig
from alignlab.label.items import item_id, load_prompt_rows, make_items, responses_of
from alignlab.label.page import FLAG_KEYS, render_page
from alignlab.label.server import LabelApp, LabelServer, url_of
from alignlab.label.stage import collect_items
from alignlab.label.store import RankingStore, read_rankings
from alignlab.label.submission import (
    FLAGS,
    Refused,
    check_fields,
    check_flags,
    check_ranks,
    dense,
    display_order,
    ranked_line,
)
from alignlab.stages import reward as reward_stage
from fixtures_pipeline import run_stage_module
from fixtures_rlhf import rlhf_inputs  # noqa: F401

SRC = Path(__file__).resolve().parents[1] / "src"
NO_FLAGS = dict.fromkeys(FLAGS, False)
PWN = "<script>window.__pwned = 1</script><b>bold</b>"


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def flags(**on: bool) -> dict:
    return {**NO_FLAGS, **on}


# ------------------------------------------------------------------------------------ what the page sends


def test_display_order_is_a_seeded_permutation_per_labeler_and_item():
    order = display_order(0, "alice", "abc", 6)
    assert sorted(order) == list(range(6))
    assert display_order(0, "alice", "abc", 6) == order  # a reload shows the same order
    others = [
        display_order(0, "bob", "abc", 6),
        display_order(0, "alice", "abd", 6),
        display_order(1, "alice", "abc", 6),
    ]
    assert any(o != order for o in others)


def test_ranked_line_puts_responses_best_first_with_ties_in_the_order_shown():
    # the page showed responses [2, 0, 3, 1] of the item; the labeler ranked them 2, 1, 2, 4 (a tie, a gap)
    line = ranked_line(
        "p", ["r0", "r1", "r2", "r3"], [2, 0, 3, 1], [2, 1, 2, 4], [flags(), {}, flags(harmful=True), {}], "ann", "t"
    )
    assert line["responses"] == ["r0", "r2", "r3", "r1"]  # r0 (rank 1), then r2 and r3 tied as shown, then r1
    assert line["ranks"] == [1, 2, 2, 3]  # renumbered without gaps
    assert line["flags"] == [{}, flags(), flags(harmful=True), {}]
    assert (line["labeler"], line["time"], line["prompt"]) == ("ann", "t", "p")
    assert dense([1, 3, 3, 4]) == [1, 2, 2, 3] and dense([2, 2]) == [1, 1]


@pytest.mark.parametrize("ranks", [[1, 2], [1, 2, 4], [0, 1, 2], [1, 2, "3"], [1, 2, True], [1.0, 2, 3], None, "1,2,3"])
def test_ranks_must_be_one_integer_from_1_to_k_per_response(ranks):
    with pytest.raises(Refused, match="give each of the 3 responses a rank from 1 \\(best\\) to 3"):
        check_ranks(ranks, 3)


def test_flags_are_known_names_with_true_or_false():
    assert check_flags(None, 2) == [NO_FLAGS, NO_FLAGS]
    assert check_flags([{"harmful": True}, {}], 2) == [flags(harmful=True), NO_FLAGS]
    with pytest.raises(Refused, match=r"unknown flag\(s\) \['rude'\]"):
        check_flags([{"rude": True}, {}], 2)
    with pytest.raises(Refused, match="true or false"):
        check_flags([{"harmful": "yes"}, {}], 2)
    with pytest.raises(Refused, match="one object of flags per response"):
        check_flags([{}], 2)
    with pytest.raises(Refused, match=r"unknown field\(s\) \['path'\]"):
        check_fields({"item": "x", "path": "/etc/passwd"})
    with pytest.raises(Refused, match="a JSON object"):
        check_fields([1, 2])


# ------------------------------------------------------------------------------------ the rankings file


def test_store_appends_one_line_per_ranking_and_resumes_after_a_torn_write(tmp_path, capsys):
    path = tmp_path / "r" / "rankings.jsonl"
    store = RankingStore(path)
    line = {"prompt": "p", "responses": ["b", "a"], "ranks": [1, 2], "labeler": "ann"}
    key = item_id("p", ["a", "b"])  # the responses in any order: the same item
    assert store.add("ann", key, line) and not store.add("ann", key, line)  # a second submit writes nothing
    assert store.add("bob", key, {**line, "labeler": "bob"})
    with open(path, "a") as f:
        f.write('{"prompt": "q", "respon')  # a kill in the middle of a write
    again = RankingStore(path)
    assert "dropped a partial last line" in capsys.readouterr().out
    assert path.read_text().count("\n") == 2 and path.read_text().endswith("\n")
    assert again.has("ann", key) and again.has("bob", key) and not again.has("cat", key)
    assert again.counts == {"ann": 1, "bob": 1}


def test_a_file_that_is_not_rankings_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "rankings.jsonl"
    path.write_text('{"prompt": "p", "responses": ["a"], "labeler": "x"}\nnot json\n')
    with pytest.raises(DataError, match=r"rankings.jsonl:2: not a JSON line"):
        RankingStore(path)
    path.write_text('{"prompt": "p"}\n')
    with pytest.raises(
        DataError, match=r"rankings.jsonl:1: a rankings line needs \['prompt', 'responses', 'labeler'\]"
    ):
        read_rankings(path)


# ------------------------------------------------------------------------------------ agreement


AGREEMENT_ROWS = [
    {"prompt": "P1", "responses": ["a", "b", "c"], "ranks": [1, 2, 3], "labeler": "alice"},
    {"prompt": "P1", "responses": ["b", "a", "c"], "ranks": [1, 2, 2], "labeler": "bob"},
    {"prompt": "P1", "responses": ["a", "b", "c"], "ranks": [1, 1, 2], "labeler": "carol"},
    {"prompt": "P2", "responses": ["x", "y"], "ranks": [1, 2], "labeler": "alice"},
    {"prompt": "P2", "responses": ["x", "y"], "ranks": [1, 2], "labeler": "bob"},
    {"prompt": "P2", "responses": ["y", "x"], "labeler": "dave"},  # no ranks: a strict ranking by order
]


def test_agreement_is_the_mean_over_labeler_pairs_of_the_share_of_untied_pairs_ordered_alike():
    # alice-bob: P1 (a,b) opposite, (a,c) bob ties, (b,c) alike; P2 (x,y) alike            -> 2 of 3
    # alice-carol: P1 (a,b) carol ties, (a,c) and (b,c) alike                              -> 2 of 2
    # bob-carol: P1 (a,b) carol ties, (a,c) bob ties, (b,c) alike                          -> 1 of 1
    # alice-dave, bob-dave: P2 (x,y) opposite                                              -> 0 of 1
    # carol-dave share no prompt: not a pair. Mean over the five pairs = (2/3 + 1 + 1 + 0 + 0) / 5
    s = stats.report(AGREEMENT_ROWS, "f.jsonl")
    by_pair = {tuple(p["labelers"]): (p["pairs"], p["agreement"]) for p in s["labeler_pairs"]}
    assert by_pair == {
        ("alice", "bob"): (3, pytest.approx(2 / 3)),
        ("alice", "carol"): (2, 1.0),
        ("alice", "dave"): (1, 0.0),
        ("bob", "carol"): (1, 1.0),
        ("bob", "dave"): (1, 0.0),
    }
    assert s["agreement"] == pytest.approx((2 / 3 + 1 + 1) / 5)
    assert s["labelers"] == {"alice": 2, "bob": 2, "carol": 1, "dave": 1}
    assert (s["prompts"], s["shared_prompts"], s["rankings_with_ties"]) == (2, 2, 2)
    assert any("mean over labeler pairs: 53.3%" in line for line in stats.table(s))


def test_stats_from_the_command_line_prints_a_table_and_writes_json_beside_the_file(tmp_path, capsys):
    path = write_jsonl(tmp_path / "rankings.jsonl", AGREEMENT_ROWS)
    assert cli_main(["label", "--stats", path]) == 0
    out = capsys.readouterr().out
    assert "6 rankings of 2 prompts by 4 labeler(s)" in out and "alice" in out and "53.3%" in out
    written = json.loads((tmp_path / "rankings.stats.json").read_text())
    assert written["agreement"] == pytest.approx(8 / 15) and written["labelers"]["alice"] == 2
    assert cli_main(["label", "--stats", path, "--output", str(tmp_path / "elsewhere.json")]) == 0
    assert (tmp_path / "elsewhere.json").is_file()


# ------------------------------------------------------------------------------------ config and data


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"k": "1"}, "'k' must be between 2 and 9"),
        ({"k": "10"}, "'k' must be between 2 and 9"),
        ({"k": "2", "policies": "[a, b, c]"}, "3 policies but only k=2"),
        ({"labeler": "<b>x</b>"}, "'labeler' must be 1-64 letters"),
        ({"port": "70000"}, "'port' must be between 0 and 65535"),
        ({"temperature": "-1"}, "'temperature' must be >= 0"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(overrides, message, capsys):
    with pytest.raises(ConfigError, match=message):
        resolve(LabelConfig, PRESETS, None, None, overrides)
    args = [x for k, v in overrides.items() for x in (f"--{k}", v)]
    assert cli_main(["label", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_refusals_of_the_data_leave_no_folder_behind(tmp_path, capsys):
    no_resp = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "p"}])
    out = tmp_path / "out" / "rankings.jsonl"
    for args, message in [
        ([], "no prompts; give --data"),
        (["--data", str(tmp_path / "missing.jsonl")], "data not found"),
        (["--data", no_resp], "no 'responses' column to rank; give --policies"),
        (["--data", no_resp, "--output", str(tmp_path / "r.txt")], "must end in .jsonl"),
    ]:
        assert cli_main(["label", "--output", str(out), *args]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    many = write_jsonl(tmp_path / "many.jsonl", [{"prompt": "p", "responses": [str(i) for i in range(10)]}])
    with pytest.raises(DataError, match="10 responses; at most 9"):
        responses_of(load_prompt_rows(many, "", 0), many)


def test_every_other_refusal_is_one_line_naming_what_is_wrong(tmp_path, capsys):
    import socket

    j = lambda name, rows: write_jsonl(tmp_path / name, rows)  # noqa: E731
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    ranked = j("ok.jsonl", [{"prompt": "p", "responses": ["a", "b"]}])
    cases = [
        (["--data", j("t.jsonl", [{"text": "x"}])], "no 'prompt' column"),
        (["--data", j("n.jsonl", [{"prompt": 5, "responses": ["a", "b"]}])], "row 0: 'prompt' must be text"),
        (["--data", j("s.jsonl", [{"prompt": "p", "responses": "ab"}])], "'responses' must be a list of strings"),
        (["--data", j("one.jsonl", [{"prompt": "p", "responses": ["a"]}])], "no prompt has two responses to rank"),
        (
            ["--data", ranked, "--port", str(busy.getsockname()[1])],
            f"cannot serve on 127.0.0.1:{busy.getsockname()[1]}",
        ),
        (["--stats", str(tmp_path / "none.jsonl")], "rankings file not found"),
        (["--stats", ranked, "--output", str(tmp_path / "s.txt")], "must end in .json with --stats"),
        (["--stats", j("empty.jsonl", [])], "no rankings"),
    ]
    try:
        for args, message in cases:
            out = [] if args[0] == "--stats" else ["--output", str(tmp_path / "out" / "r.jsonl")]
            assert cli_main(["label", *out, *args]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and message in err, (args, err)
    finally:
        busy.close()
    assert not (tmp_path / "out").exists()  # refused before writing: nothing left behind


def test_serving_beyond_loopback_warns_and_ctrl_c_ends_with_a_summary(tmp_path, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "p", "responses": ["a", "b"]}])
    monkeypatch.setattr(LabelServer, "serve_forever", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    out = tmp_path / "labels" / "rankings.jsonl"
    assert cli_main(["label", "--data", data, "--output", str(out), "--host", "0.0.0.0", "--port", "0"]) == 0
    printed = capsys.readouterr()
    assert "WARNING: serving on 0.0.0.0, not loopback" in printed.err and "open http://127.0.0.1:" in printed.out
    summary = json.loads((tmp_path / "labels" / "rankings.run" / "summary.json").read_text())
    assert (summary["prompts"], summary["submitted"], summary["rankings"]) == (1, 0, str(out))


def test_items_come_once_each_with_two_responses_or_more():
    rows = [
        {"prompt": "a", "responses": ["1", "2"]},
        {"prompt": "b", "responses": ["only"]},
        {"prompt": "a", "responses": ["2", "1"]},  # the same item again, in another order
        {"prompt": [{"role": "user", "content": "hi"}], "responses": ["x", "y", "z"]},
    ]
    items, left_out = make_items(rows, responses_of(rows, "rows"))
    assert [it.prompt for it in items] == ["a", [{"role": "user", "content": "hi"}]] and left_out == 2
    assert items[0].id == item_id("a", ["2", "1"])


def test_a_saved_world_split_is_read_whatever_its_split_is_called(tmp_path):
    import datasets

    rows = [{"prompt": f"q{i}", "responses": ["a", "b"]} for i in range(3)]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "test"))
    assert [r["prompt"] for r in load_prompt_rows(str(tmp_path / "test"), "", 2)] == ["q0", "q1"]


def test_responses_sampled_from_two_policies_fill_the_slots_in_turn(rlhf_inputs, tmp_path):  # noqa: F811
    policy = rlhf_inputs["llama_policy"]
    cfg = resolve(
        LabelConfig,
        PRESETS,
        "smoke",
        None,
        {"data": rlhf_inputs["prompts"], "max_prompts": "3", "policies": f"[{policy}, {policy}]", "k": "3"},
    )
    items, left_out = collect_items(cfg)
    assert len(items) + left_out == 3 and all(len(it.responses) == 3 for it in items)
    again, _ = collect_items(cfg)
    assert [it.responses for it in again] == [it.responses for it in items]  # seeded: a restart ranks the same


# ------------------------------------------------------------------------------------ the server over HTTP


@pytest.fixture
def served(tmp_path):
    """A server on a free loopback port in this process, over 3 ranked rows (one a script)."""
    rows = [
        {"prompt": "<img src=x onerror=alert(1)>", "responses": ["a", PWN, "c"]},
        {"prompt": "second", "responses": ["x", "y"]},
        {"prompt": "third", "responses": ["u", "v", "w", "z"]},
    ]
    data = write_jsonl(tmp_path / "ranked.jsonl", rows)
    items, _ = make_items(load_prompt_rows(data, "", 0), responses_of(rows, data))
    app = LabelApp(items, RankingStore(tmp_path / "rankings.jsonl"), seed=0)
    server = LabelServer(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()  # quick to shut down
    yield url_of("127.0.0.1", server.server_address[1]), tmp_path / "rankings.jsonl"
    server.shutdown()
    server.server_close()


def http(url: str, body=None, headers: dict | None = None, method: str | None = None) -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, headers={**hdrs, **(headers or {})}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text, ctype = r.status, r.read().decode(), r.headers.get_content_type()
    except urllib.error.HTTPError as e:
        status, text, ctype = e.code, e.read().decode(), e.headers.get_content_type()
    return status, json.loads(text) if ctype == "application/json" else text


def test_server_serves_the_next_prompt_and_saves_a_checked_submission(served):
    url, rankings = served
    status, nxt = http(url + "api/next?labeler=ann")
    assert status == 200 and (nxt["done"], nxt["total"]) == (0, 3) and nxt["item"]["prompt"].startswith("<img")
    shown = nxt["item"]["responses"]
    assert sorted(shown) == sorted(["a", PWN, "c"])
    ranks = [{"a": 1, PWN: 3, "c": 1}[r] for r in shown]  # a and c tied best
    body = {
        "item": nxt["item"]["id"],
        "labeler": "ann",
        "ranks": ranks,
        "flags": [{"harmful": r == PWN} for r in shown],
    }
    assert http(url + "api/submit", body) == (200, {"ok": True, "done": 1, "total": 3, "labeler": "ann"})
    assert http(url + "api/submit", body)[0] == 409  # a double submit adds no line
    (line,) = [json.loads(x) for x in rankings.read_text().splitlines()]
    tied = [r for r in shown if r != PWN]  # the tie in the order shown
    assert line["responses"] == [*tied, PWN] and line["ranks"] == [1, 1, 2] and line["labeler"] == "ann"
    assert line["flags"] == [NO_FLAGS, NO_FLAGS, flags(harmful=True)]
    assert http(url + "api/next?labeler=ann")[1]["item"]["prompt"] == "second"  # resumes where ann stopped
    assert http(url + "api/next?labeler=bob")[1]["done"] == 0  # bob has his own progress


def test_server_refuses_bad_submissions_with_a_reason(served):
    url, rankings = served
    item = http(url + "api/next?labeler=ann")[1]["item"]
    ok = {"item": item["id"], "labeler": "ann", "ranks": [1, 2, 3], "flags": [{}, {}, {}]}
    for change, status, message in [
        ({"ranks": [1, 2]}, 400, "give each of the 3 responses a rank"),
        ({"ranks": [1, 2, 9]}, 400, "from 1 \\(best\\) to 3"),
        ({"flags": [{"nsfw": True}, {}, {}]}, 400, "unknown flag"),
        ({"item": "0000"}, 400, "unknown prompt id '0000'"),
        ({"labeler": "bob"}, 400, "was not shown to bob"),  # never served bob
        ({"labeler": "../../etc"}, 400, "labeler name must be"),
        ({"output": "/tmp/x"}, 400, "unknown field"),
    ]:
        got = http(url + "api/submit", {**ok, **change})
        assert got[0] == status and re.search(message, got[1]["error"]), (change, got)
    assert http(url + "api/submit", b"{not json")[1] == {"error": "the submission is not valid JSON"}
    assert http(url + "api/submit", b"ranks=1", headers={"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    assert http(url + "api/submit", ok, headers={"Origin": "http://evil.example"})[0] == 403
    assert http(url + "api/next?labeler=ann", headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    assert http(url + "etc/passwd")[0] == 404
    assert not rankings.exists()  # nothing was accepted, nothing written


def test_the_page_is_one_document_with_a_nonce_policy_and_no_markup_from_data(served):
    url, _ = served
    with urllib.request.urlopen(url, timeout=10) as r:
        page, csp = r.read().decode(), r.headers["Content-Security-Policy"]
    assert "script-src 'nonce-" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert page.count(f'nonce="{nonce}"') == 2  # the one style and the one script
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page and "document.write" not in page
    assert 'data-labeler="&lt;x&quot; y"' in render_page("n", '<x" y')  # a value filled in is escaped


# ------------------------------------------------------------------------------------ ties reach the reward model


def test_rows_with_ranks_keep_their_ties_and_rows_without_are_as_before(tmp_path):
    rows = [
        {"prompt": "a", "responses": ["x", "y", "y", "z"], "ranks": [1, 2, 2, 2]},  # a repeat keeps its first rank
        {"prompt": "b", "responses": ["u", "v"], "ranks": [1, 1]},  # all tied: nothing to learn
    ]
    got, skipped = reward_stage.load_comparisons(write_jsonl(tmp_path / "r.jsonl", rows), "train")
    assert [(r["responses"], r["ranks"]) for r in got] == [(["x", "y", "z"], [1, 2, 2])] and skipped == 1
    assert reward_stage.strict_pairs(3, [1, 2, 2]) == [(0, 1), (0, 2)]
    assert reward_stage.tie_counts(got, []) == {"train_pairs": 2, "train_pairs_tied": 1, "val_pairs_tied": 0}
    plain, _ = reward_stage.load_comparisons(
        write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "responses": ["x", "y"]}]), "train"
    )
    assert "ranks" not in plain[0] and reward_stage.rank_tensor(plain, 2) is None
    assert reward_stage.tie_counts(plain, plain) == {}  # strict rankings: the summary keeps its keys
    acc, n = reward_stage.pair_accuracy([["x", "y", "z"]], got, [[0.0, 1.0, -1.0]], [[1, 2, 2]])
    assert (acc, n) == (0.5, 2)  # (x,y) wrong, (x,z) right, (y,z) tied: left out


def rank_through_http(url: str, labeler: str, n: int, tie_every: int) -> tuple[int, int, int]:
    """Rank ``n`` prompts as ``labeler`` over HTTP (the page's requests): the first response shown best, the rest
    in the order shown, the last two tied on every ``tie_every``-th prompt and all tied on the first. Returns the
    (ordered, tied) pairs written and the prompts with no ordered pair."""
    ordered = tied = all_tied = 0
    for i in range(n):
        item = http(f"{url}api/next?labeler={labeler}")[1]["item"]
        k = len(item["responses"])
        ranks = list(range(1, k + 1))
        if i == 0:
            ranks, all_tied = [1] * k, all_tied + 1
        elif i % tie_every == 0:
            ranks[-1] = ranks[-2]
        assert http(url + "api/submit", {"item": item["id"], "labeler": labeler, "ranks": ranks})[0] == 200
        pairs = [(a, b) for x, a in enumerate(ranks) for b in ranks[x + 1 :]]
        ordered += sum(a != b for a, b in pairs)
        tied += sum(a == b for a, b in pairs)
    return ordered, tied, all_tied


def test_rankings_written_through_the_server_train_the_reward_model(rlhf_inputs, tmp_path):  # noqa: F811
    """The end: rankings with ties from the server's routes -> alignlab reward on a tiny Llama; the summary counts the
    ordered pairs it trained and evaluated on and the tied ones it left out."""
    data = rlhf_inputs["ranked"]  # 48 prompts, 3 distinct responses each
    rows = load_prompt_rows(data, "", 0)
    items, _ = make_items(rows, responses_of(rows, data))
    train = items[:13]
    val = [it for it in items[13:] if it.prompt not in {t.prompt for t in train}][:7]  # no prompt on both sides
    counts = {}
    for labeler, part, out in (("ann", train, "train.jsonl"), ("ben", val, "val.jsonl")):
        server = LabelServer(LabelApp(part, RankingStore(tmp_path / out), seed=0), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()  # quick to shut down
        url = url_of("127.0.0.1", server.server_address[1])
        counts[labeler] = rank_through_http(url, labeler, len(part), tie_every=3)
        server.shutdown()
        server.server_close()
    s = run_stage_module(
        "reward",
        "alignlab.stages.reward",
        "RewardConfig",
        "smoke",
        model=rlhf_inputs["llama_policy"],
        data=str(tmp_path / "train.jsonl"),
        eval_data=str(tmp_path / "val.jsonl"),
        world_dir="",
        batch_size="4",
        output_dir=str(tmp_path / "rm"),
        **{"run.tensorboard": "false"},
    )
    (ann_ordered, ann_tied, ann_all_tied), (ben_ordered, ben_tied, ben_all_tied) = counts["ann"], counts["ben"]
    assert (ann_ordered, ann_tied, ann_all_tied) == (3 * 12 - 4, 3 + 4, 1)  # 4 prompts with one tied pair
    assert s["train_prompts"] == 13 - 1 and s["train_prompts_skipped_no_pairs"] == 1
    assert (s["train_pairs"], s["train_pairs_tied"]) == (ann_ordered, ann_tied - 3)  # the all-tied row was skipped
    assert s["val_prompts"] == 7 - ben_all_tied and s["val_pairs"] == ben_ordered
    assert s["val_pairs_tied"] == ben_tied - 3 and s["steps"] == 3  # 12 prompts in batches of 4
    assert 0.0 <= s["val_accuracy_train_labelers"] <= 1.0 and s["final_train_loss"] > 0
    assert "tied training pairs" in (tmp_path / "rm" / "README.md").read_text()


# ------------------------------------------------------------------------------------ a person at the page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
BROWSER_PROMPTS = [
    {"prompt": "Which colour is the sky?", "responses": ["Blue.", "Green.", PWN, "I don't know."]},
    {"prompt": "<img src=x onerror=window.__pwned=2>", "responses": ["7", "8", "9"]},
    {"prompt": "Say hi.", "responses": ["hi", "hello", "hey there"]},
    {"prompt": "Name a fish.", "responses": ["Cod.", "A cat.", "Salmon.", "Trout."]},
]
# what the person does: the rank they give each response (by text), the flags they tick, and how
BROWSER_PLAN = [
    ({"Blue.": 1, "Green.": 3, PWN: 4, "I don't know.": 2}, {PWN: "harmful", "Green.": "hallucination"}, "clicks"),
    ({"7": 1, "8": 2, "9": 2}, {"9": "fails_instruction"}, "keys"),  # a tie
    ({"hi": 1, "hello": 1, "hey there": 1}, {}, "keys"),  # all tied
    ({"Cod.": 1, "A cat.": 3, "Salmon.": 1, "Trout.": 2}, {"A cat.": "inappropriate"}, "clicks"),
]


class Server:
    """``alignlab label`` started as a person starts it, on a free port, in a process of its own."""

    def __init__(self, data: str, out: Path):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, "-m", "alignlab.cli", "label", "--data", data, "--output", str(out)]
        self.proc = subprocess.Popen(
            [*cmd, "--labeler", "alice", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.proc.stdout], daemon=True).start()

    def url(self) -> str:
        """The URL it prints once it listens."""
        deadline, seen = time.time() + 60, []
        while time.time() < deadline and (self.proc.poll() is None or not self.lines.empty()):
            try:
                seen.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                continue
            if "open http" in seen[-1]:
                return seen[-1].split("open ")[1].split()[0]
        raise AssertionError(f"the server printed no URL:\n{''.join(seen)}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # no goodbye: what it acknowledged must already be on disk
        self.proc.wait(10)


def rank_on_page(driver, wait, done: int, plan) -> tuple[list[str], str]:
    """Rank the prompt on the page as ``plan`` says, by mouse or keyboard, submit, and wait for the next one."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    wanted, ticks, how = plan
    wait.until(lambda d: d.find_element(By.ID, "progress").text == f"{done} of 4 prompts")
    prompt = driver.find_element(By.ID, "prompt").text
    cards = driver.find_elements(By.CSS_SELECTOR, ".card")
    shown = [c.find_element(By.CSS_SELECTOR, ".response").text for c in cards]
    assert not driver.find_elements(By.CSS_SELECTOR, "#prompt *, .response *")  # model text made no elements
    assert driver.execute_script("return typeof window.__pwned") == "undefined"
    press = lambda *keys: ActionChains(driver).send_keys(*keys).perform()  # noqa: E731  (to the element in focus)
    if how == "clicks":
        for card, text in zip(cards, shown):
            card.find_element(By.CSS_SELECTOR, f'.rank[data-rank="{wanted[text]}"]').click()
            if text in ticks:
                card.find_element(By.CSS_SELECTOR, f'input[data-flag="{ticks[text]}"]').click()
        driver.find_element(By.ID, "submit").click()
    else:  # the first card has focus; a digit ranks it and moves on; arrows move back; letters tick flags
        press(*[str(wanted[t]) for t in shown])
        for i in reversed(range(len(shown))):  # back up to the top, ticking on the way
            if shown[i] in ticks:
                press(FLAG_KEYS[ticks[shown[i]]])
            if i:
                press(Keys.ARROW_UP)
        press(Keys.ENTER)
    wait.until(lambda d: d.find_element(By.ID, "progress").text == f"{done + 1} of 4 prompts")
    return shown, prompt


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Chromium and chromedriver on PATH (apt-get install chromium chromium-driver); none downloaded",
)
def test_a_person_ranks_in_chromium_across_a_server_kill(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    data = write_jsonl(tmp_path / "ranked.jsonl", BROWSER_PROMPTS)
    out = tmp_path / "labels" / "rankings.jsonl"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        opts.add_argument(arg)
    server = Server(data, out)  # starts while the browser does
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        wait = WebDriverWait(driver, 15)
        driver.get(server.url())
        seen = [rank_on_page(driver, wait, i, BROWSER_PLAN[i]) for i in range(3)]
        server.kill()
        assert len(out.read_text().splitlines()) == 3
        server = Server(data, out)
        driver.get(server.url())  # the restarted server resumes where alice stopped
        seen.append(rank_on_page(driver, wait, 3, BROWSER_PLAN[3]))
        wait.until(lambda d: "All 4 prompts ranked" in d.find_element(By.ID, "finished").text)
        assert driver.execute_script("return typeof window.__pwned") == "undefined"
    finally:
        driver.quit()
        server.kill()
    assert seen[0][0].count(PWN) == 1 and seen[1][1] == BROWSER_PROMPTS[1]["prompt"]  # shown as literal text
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 4  # none lost, none twice
    for line, src, (wanted, ticks, _), (shown, _) in zip(lines, BROWSER_PROMPTS, BROWSER_PLAN, seen):
        best_first = sorted(shown, key=lambda t: (wanted[t], shown.index(t)))  # ties in the order shown
        assert line["prompt"] == src["prompt"] and line["labeler"] == "alice"
        assert line["responses"] == best_first and sorted(shown) == sorted(src["responses"])
        assert line["ranks"] == dense([wanted[t] for t in best_first])
        assert line["flags"] == [flags(**({ticks[t]: True} if t in ticks else {})) for t in best_first]
