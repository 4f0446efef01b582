"""Reading scaling-sweep results and writing fits, with errors a user can act on.

``read_runs_csv`` reads one row per training run.  It accepts the columns
``N, D, loss`` (Chinchilla's L(N, D)) or ``C, loss`` (GPT-4's L(C)), in any
case, plus the spellings of the digitised Chinchilla figure-4 data
(``Model Size`` → N, ``Training FLOP`` → C; Besiroglu et al. 2024).  A bad
value is reported with the file, the line number and the column, so the user
can open the file at that line.

``write_fit_json`` writes fits (and their bootstrap intervals) atomically —
a temporary file in the same folder, then ``os.replace`` — so a crash never
leaves a half-written prediction behind.  That matters here because
predictions are made and recorded *before* the big run is trained; the
record must be whole or absent.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.errors import DataError
from alignlab.scaling.bootstrap import summary as bootstrap_summary

# canonical column -> accepted header spellings (compared lower-cased, stripped)
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "N": ("n", "model size", "model_size", "params", "parameters", "n_params"),
    "D": ("d", "tokens", "training tokens", "training_tokens", "n_tokens"),
    "C": ("c", "training flop", "training flops", "training_flop", "flops", "compute"),
    "loss": ("loss", "final loss", "final_loss"),
    "pass_rate": ("pass_rate", "pass rate", "pass@1"),
}

FIT_JSON_FORMAT = "alignlab.scaling.fits/1"


class RunsFileError(DataError):
    """A runs file that cannot be used; the message names the file, line and column (a user error: status 2)."""

    def __init__(self, path: str | os.PathLike[str], message: str, line: int | None = None, column: str | None = None):
        self.path = str(path)
        self.line = line
        self.column = column
        where = self.path + (f", line {line}" if line is not None else "")
        super().__init__(f"{where}: {message}")


def _canonical_columns(path: Path, header: Sequence[str]) -> dict[str, int]:
    """Map canonical names (N, D, C, loss, pass_rate) to column indices; reject duplicates."""
    lookup = {alias: canon for canon, aliases in COLUMN_ALIASES.items() for alias in aliases}
    found: dict[str, int] = {}
    for i, name in enumerate(header):
        canon = lookup.get(name.strip().lower())
        if canon is None:
            continue
        if canon in found:
            raise RunsFileError(
                path,
                f"columns {header[found[canon]]!r} and {name!r} both mean {canon!r}; keep one",
                line=1,
                column=name,
            )
        found[canon] = i
    return found


def _check_required(path: Path, header: Sequence[str], cols: Mapping[str, int], target: str) -> None:
    if target not in cols:
        raise RunsFileError(
            path,
            f"missing column {target!r} (accepted names: {', '.join(COLUMN_ALIASES[target])}); "
            f"found columns: {', '.join(header)}",
            column=target,
        )
    if ("N" in cols and "D" in cols) or "C" in cols:
        return
    missing = "D" if "N" in cols else "N" if "D" in cols else "C"
    raise RunsFileError(
        path,
        f"missing column {missing!r}: need either N and D, or C (compute), next to {target!r}; "
        f"found columns: {', '.join(header)}",
        column=missing,
    )


def _label(header_name: str, canon: str) -> str:
    """'Model Size' (N), or just 'N' when the header already is the canonical name."""
    return repr(header_name) if header_name.strip() == canon else f"{header_name!r} ({canon})"


def _parse_value(path: Path, raw: str, line: int, column: str, header_name: str) -> float:
    """A finite number, > 0 (or in [0, 1] for pass_rate)."""
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    ok = math.isfinite(value) and (0.0 <= value <= 1.0 if column == "pass_rate" else value > 0.0)
    if not ok:
        expected = "a number in [0, 1]" if column == "pass_rate" else "a positive finite number"
        raise RunsFileError(
            path,
            f"column {_label(header_name, column)}: bad value {raw!r}, expected {expected}",
            line=line,
            column=header_name,
        )
    return value


@contextlib.contextmanager
def _csv_with_header(path: Path) -> Iterator[tuple[Any, list[str]]]:
    """A CSV reader past its header line, refused by name when the file cannot be opened or has no header."""
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise RunsFileError(path, f"cannot open: {exc.strerror or exc}") from exc
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise RunsFileError(path, "empty file or empty header line", line=1)
        yield reader, header


def read_runs_csv(path: str | os.PathLike[str], target: str = "loss") -> dict[str, np.ndarray]:
    """Read a sweep of runs: {"N", "D", "C", target} → float arrays (only the columns present).

    ``target`` is "loss" (default) or "pass_rate" (for the capability law).
    Column names are matched case-insensitively against ``COLUMN_ALIASES``;
    other columns are ignored.  Blank lines are skipped.  Raises
    ``RunsFileError`` naming the file, the 1-based line number (the header
    is line 1) and the column for a bad or missing value, and the column
    for a missing column.  Tokens are not derived from C: use
    ``laws.tokens_from_compute`` explicitly if the file has only N and C.
    """
    if target not in ("loss", "pass_rate"):
        raise ValueError("target must be 'loss' or 'pass_rate'")
    path = Path(path)
    with _csv_with_header(path) as (reader, header):
        cols = _canonical_columns(path, header)
        _check_required(path, header, cols, target)
        wanted = {k: i for k, i in cols.items() if k in ("N", "D", "C", target)}
        values: dict[str, list[float]] = {k: [] for k in wanted}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            for canon, i in wanted.items():
                if i >= len(row) or not row[i].strip():
                    raise RunsFileError(
                        path, f"column {_label(header[i], canon)}: missing value", line=line, column=header[i]
                    )
                values[canon].append(_parse_value(path, row[i], line, canon, header[i]))
    if not values[target]:
        raise RunsFileError(path, "no data rows")
    return {k: np.asarray(v, dtype=float) for k, v in values.items()}


PROBLEM_ALIASES = ("problem", "problem_id", "item", "task")


def read_pass_rates_csv(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A capability file: {"C", "pass_rate"} float arrays, plus "problem" (str) for per-problem rows.

    Columns ``C, pass_rate`` (one aggregate pass rate per run) or ``C, problem, pass_rate``
    (one row per run and problem). An aggregate must lie in (0, 1] (−log 0 is infinite); a
    per-problem rate may be 0, since the fit drops such problems itself (GPT-4's restriction
    to problems the small models solve sometimes). Errors name the file, line and column.
    """
    path = Path(path)
    with _csv_with_header(path) as (reader, header):
        cols = _canonical_columns(path, header)
        names = [h.strip().lower() for h in header]
        i_problem = next((names.index(a) for a in PROBLEM_ALIASES if a in names), None)
        for need in ("C", "pass_rate"):
            if need not in cols:
                raise RunsFileError(
                    path,
                    f"missing column {need!r} (accepted names: {', '.join(COLUMN_ALIASES[need])}); "
                    f"found columns: {', '.join(header)}",
                    line=1,
                    column=need,
                )
        C, rates, problems, lines = [], [], [], []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            cells = {}
            for canon, i in (("C", cols["C"]), ("pass_rate", cols["pass_rate"]), ("problem", i_problem)):
                if i is None:
                    continue
                if i >= len(row) or not row[i].strip():
                    raise RunsFileError(
                        path, f"column {_label(header[i], canon)}: missing value", line=line, column=header[i]
                    )
                cells[canon] = row[i]
            C.append(_parse_value(path, cells["C"], line, "C", header[cols["C"]]))
            rates.append(_parse_rate(path, cells["pass_rate"], line, header[cols["pass_rate"]], i_problem is not None))
            lines.append(line)
            if i_problem is not None:
                problems.append(cells["problem"].strip())
    if not C:
        raise RunsFileError(path, "no data rows")
    out = {"C": np.asarray(C, dtype=float), "pass_rate": np.asarray(rates, dtype=float), "line": np.asarray(lines)}
    if i_problem is not None:
        out["problem"] = np.asarray(problems, dtype=object)
    return out


def pass_rate_matrix(
    path: str | os.PathLike[str], data: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-problem rows → (C values ascending, [problems, C] pass rates, problem names).

    Every problem must have exactly one row at every C: a mean over problems that differ
    from one C to the next would mix a change of problem set into the trend with compute.
    """
    Cs = np.unique(data["C"])
    names = sorted(set(data["problem"]))
    col = {c: j for j, c in enumerate(Cs)}
    row = {p: i for i, p in enumerate(names)}
    rates = np.full((len(names), len(Cs)), np.nan)
    for c, p, r, line in zip(data["C"], data["problem"], data["pass_rate"], data["line"]):
        i, j = row[p], col[c]
        if not np.isnan(rates[i, j]):
            raise RunsFileError(path, f"problem {p!r} has a second row at C = {c:g}", line=int(line), column="problem")
        rates[i, j] = r
    missing = np.argwhere(np.isnan(rates))
    if len(missing):
        i, j = missing[0]
        raise RunsFileError(
            path,
            f"problem {names[i]!r} has no row at C = {Cs[j]:g} ({len(missing)} (problem, C) pairs missing); "
            "every problem needs a pass rate at every C",
            column="problem",
        )
    return Cs, rates, names


def _parse_rate(path: Path, raw: str, line: int, header_name: str, zero_ok: bool) -> float:
    """A pass rate in (0, 1], or [0, 1] for a per-problem row."""
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (0.0 <= value if zero_ok else 0.0 < value) and value <= 1.0):
        expected = "a number in [0, 1]" if zero_ok else "a number in (0, 1] (-log 0 is infinite)"
        raise RunsFileError(
            path,
            f"column {_label(header_name, 'pass_rate')}: bad value {raw!r}, expected {expected}",
            line=line,
            column=header_name,
        )
    return value


def _jsonable(obj: Any) -> Any:
    """Numbers, arrays and nested containers → plain JSON (non-finite floats → null)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _fit_record(item: Any, name: str | None, boot: Mapping[str, Any] | None) -> dict[str, Any]:
    """One fit (or a bootstrap result, which carries its full-data fit) → a JSON record."""
    if isinstance(item, Mapping) and "full_fit" in item:
        boot, item = item, item["full_fit"]
    if not hasattr(item, "to_dict"):
        raise TypeError(f"cannot write {type(item).__name__}: expected a fit with .to_dict() or a bootstrap result")
    record = dict(item.to_dict())
    if name is not None:
        record["name"] = name
    if boot is not None:
        record["intervals"] = bootstrap_summary(boot)
    return record


def write_fit_json(
    path: str | os.PathLike[str],
    *fits: Any,
    names: Sequence[str] | None = None,
    bootstraps: Sequence[Mapping[str, Any] | None] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write fits with their parameters and intervals to ``path`` as JSON, atomically.

    Each of ``fits`` is a fit (``PowerLawFit``, ``ChinchillaFit``,
    ``CapabilityFit``) or a result of ``bootstrap.bootstrap`` (its full-data
    fit is written with the intervals).  ``bootstraps`` pairs an explicit
    bootstrap result with each fit instead.  ``metadata`` (e.g. the target
    compute and the time the prediction was made) is stored as given.
    Returns the path written.
    """
    if not fits:
        raise ValueError("no fits to write")
    if names is not None and len(names) != len(fits):
        raise ValueError("names must have one entry per fit")
    if bootstraps is not None and len(bootstraps) != len(fits):
        raise ValueError("bootstraps must have one entry per fit (None where there is none)")
    records = [
        _fit_record(f, names[i] if names else None, bootstraps[i] if bootstraps else None) for i, f in enumerate(fits)
    ]
    doc = {"format": FIT_JSON_FORMAT, "fits": records, "metadata": dict(metadata or {})}
    text = json.dumps(_jsonable(doc), indent=2, allow_nan=False) + "\n"

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
