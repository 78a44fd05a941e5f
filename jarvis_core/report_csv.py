"""The workbook's tables as CSV files, for pandas and spreadsheets (`jarvis report ... --csv DIR`).

`write_csv(results_path, out_dir)` writes into `out_dir`:

- `summary.csv`, `results.csv`: the Summary and Results sheets;
- `load.csv`: the Load sheet's level rows, when the run has load levels;
- `side_by_side.csv`, `side_by_side_load.csv`: the engine-against-engine sheets, when models share a `label:`;
- `definitions.csv`: every column of those files with its unit and definition (the Definitions sheet's).

The columns are the workbook's (the same `Column` tuples, the same row values: `report.summary_values`,
`report.result_values`, `report_load.load_values`, `report_tables.side_table`), so names and units match the workbook.
UTF-8 without a byte-order mark, RFC 4180 quoting (the csv module: a field holding a comma, a quote or a line break is
quoted, quotes doubled), CRLF line ends, numbers as Python writes them (full precision, `.` decimal), empty for null,
yes/no for booleans. Text is written as it is: a spreadsheet that treats a cell starting with `=` as a formula should
import the files as text.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable

from .errors import UsageError
from .report_cells import Column
from .results import BadLines, read_results


def _write(path: Path, columns: tuple[Column, ...], rows: Iterable[list[Any]]) -> Path:
    """One CSV file, written beside its final name and moved there once complete."""
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)  # excel dialect: RFC 4180 quoting, CRLF
            writer.writerow([c.name for c in columns])
            for values in rows:
                writer.writerow(["" if v is None else v for v in values])
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_csv(results_path: Path, out_dir: Path, bad: BadLines | None = None) -> list[Path]:
    """Write the workbook's tables as CSV files into `out_dir` (created if need be); returns the files written.
    Lines of the results file that cannot be read are skipped and noted in `bad`."""
    from .report import (RESULTS_COLUMNS, SUMMARY_COLUMNS, cannot_write, check_writable, result_values, scan_results,
                         summary_values)
    from .report_load import load_columns, load_rows, load_values
    from .report_tables import SIDE_COLUMNS, SIDE_LOAD_COLUMNS, pairs_from, side_load_table, side_table

    results_path, out_dir = Path(results_path), Path(out_dir)
    if not results_path.is_file():
        raise UsageError(f"no results file at {results_path}: give the results.jsonl a run wrote")
    try:
        check_writable(out_dir, folder=True)
    except OSError as exc:
        raise cannot_write("CSV files", out_dir, exc, results_path, "give another folder") from None
    scan = scan_results(results_path, bad)
    pairs = pairs_from(scan.rows, scan.labelled_levels, list(scan.order))
    written: list[tuple[str, tuple[Column, ...]]] = []

    def emit(name: str, columns: tuple[Column, ...], rows: Iterable[list[Any]]) -> None:
        _write(out_dir / name, columns, rows)
        written.append((name, columns))

    try:
        emit("summary.csv", SUMMARY_COLUMNS, (summary_values(row) for row in scan.rows))
        emit("results.csv", RESULTS_COLUMNS, (result_values(r) for r in read_results(results_path)
                                              if r.get("type") == "sample"))
        levels, _ = load_rows(results_path)
        if levels:
            level_columns = load_columns()
            emit("load.csv", level_columns, (load_values(r, level_columns) for r in levels))
        tests, loads = side_table(pairs), side_load_table(pairs)
        if tests:
            emit("side_by_side.csv", SIDE_COLUMNS, tests)
        if loads:
            emit("side_by_side_load.csv", SIDE_LOAD_COLUMNS, loads)
        _write(out_dir / "definitions.csv", _DEFINITION_COLUMNS,
               ([name, c.name, c.unit, c.definition] for name, columns in written for c in columns))
        for name in set(_ONLY_WHEN_THERE) - {n for n, _ in written}:  # an earlier export's would read as this run's
            (out_dir / name).unlink(missing_ok=True)
    except OSError as exc:
        raise cannot_write("CSV files", out_dir, exc, results_path, "give another folder") from None
    return [out_dir / name for name, _ in written] + [out_dir / "definitions.csv"]


_ONLY_WHEN_THERE = ("load.csv", "side_by_side.csv", "side_by_side_load.csv")
"""The files written only when the run has such rows (load levels, labelled models)."""

_DEFINITION_COLUMNS = (
    Column("file", "", "The CSV file."), Column("column", "", "A column of that file."),
    Column("unit", "", "Its unit (s, tokens/s, samples, ratio; empty for text)."),
    Column("definition", "", "What it holds, as in the workbook's Definitions sheet."),
)
