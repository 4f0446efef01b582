"""Data loading: every accepted source and format, and errors that name file, line and column."""

from __future__ import annotations

import json

import datasets
import pytest

from alignlab.data.load import DataError, column_values, detect_format, load_dataset_any, require_format


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(
    "rows, fmt",
    [
        ([{"text": "a b"}], "text"),
        ([{"prompt": "p", "completion": "c"}], "prompt_completion"),
        ([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}], "messages"),
        ([{"prompt": "p", "chosen": "a", "rejected": "b"}], "preference"),
        ([{"prompt": "p", "responses": ["a", "b", "c", "d"]}], "ranked"),
    ],
)
def test_formats_detected_from_jsonl(tmp_path, rows, fmt):
    ds = load_dataset_any(_jsonl(tmp_path / "d.jsonl", rows * 3))
    assert len(ds) == 3 and detect_format(ds) == fmt


def test_malformed_jsonl_line_is_reported_with_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n{"text": "fine"}\n{"text": broken}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:3: malformed JSON"):
        load_dataset_any(str(p))


def test_missing_columns_name_column_and_formats(tmp_path):
    ds = load_dataset_any(_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "a"}]))
    with pytest.raises(DataError, match=r"missing \['rejected'\]"):
        require_format(ds, ("preference",), "d.jsonl")
    with pytest.raises(DataError, match="prompt_completion"):
        require_format(ds, ("prompt_completion", "messages"), "d.jsonl")


def test_saved_folder_parquet_and_missing_paths(tmp_path):
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"text": "x"}] * 4),
            "validation": datasets.Dataset.from_list([{"text": "y"}] * 2),
        }
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    assert len(load_dataset_any(str(tmp_path / "saved"), "validation")) == 2
    with pytest.raises(DataError, match="no split 'test'"):
        load_dataset_any(str(tmp_path / "saved"), "test")
    dd["train"].to_parquet(str(tmp_path / "t.parquet"))
    assert load_dataset_any(str(tmp_path / "t.parquet"))["text"][0] == "x"
    with pytest.raises(DataError, match="data not found: ./nowhere.jsonl"):
        load_dataset_any("./nowhere.jsonl")
    (tmp_path / "f.csv").write_text("a\n1\n")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        load_dataset_any(str(tmp_path / "f.csv"))


def test_column_values_reads_the_rows_a_dataset_shows_in_order():
    # after select/shuffle a dataset reads its table through an indices mapping: the bulk read must follow it
    ds = datasets.Dataset.from_list([{"text": f"doc {i}", "n": i} for i in range(50)])
    view = ds.shuffle(seed=3).select(range(0, 40, 3))
    assert column_values(view, "text") == [row["text"] for row in view]
    assert column_values(ds.select([]), "text") == []


def test_unigram_entropy_is_the_entropy_of_token_frequencies():
    import math

    import torch

    from alignlab.data.packing import unigram_entropy

    blocks = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]])  # frequencies 1/4, 1/4, 1/2
    assert unigram_entropy(blocks) == pytest.approx(-(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)), rel=1e-12)
    assert unigram_entropy(torch.full((3, 5), 7)) == 0.0
