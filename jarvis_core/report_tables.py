"""Tables the workbook, the CSV files, the HTML page and the console share, as plain data: engine against engine.

Models whose entries in the setups file carry the same `label:` (e.g. `qwen2.5-0.5b` on `ol_qwen2.5:0.5b` and on
`vllm:Qwen/Qwen2.5-0.5B-Instruct`) are compared side by side, whatever setup they are in: for every test two or more of
them ran, each model's figures (the Summary's, over warm samples as `results.summarize` computes them) and the ratio
of each figure to the first model's (the first in the order of the results file, which follows the setups file); and
for every load level (concurrency or rate) two or more of them ran, the same for the level's figures.

`label_pairs(records)` builds the comparison from the records of a results file; `pairs_from(rows, levels)` from
summary rows and `load_level` records already at hand (the workbook). `side_table` and `side_load_table` are the rows,
in the order of `SIDE_COLUMNS` and `SIDE_LOAD_COLUMNS`, that the workbook's sheets and the CSV files both write;
`console_text` is the console's view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .report import ENGINE_COLUMN, MODEL_COLUMN, SETUP_COLUMN, SUMMARY_COLUMNS, TEST_COLUMN, scan_records
from .report_cells import Column, number, status_shown
from .report_load import load_columns, load_values
from .results import SummaryRow

#: The Summary's figures compared per test: the column names of Summary (warm samples), and the pass rate.
TEST_FIGURES = ("ttft_s_p50", "e2e_s_p50", "decode_tps_p50", "output_tokens_mean", "pass_rate")
#: The Load sheet's figures compared per level.
LOAD_FIGURES = ("output_tps", "request_rate", "goodput_rps", "ttft_p50", "ttft_p99", "itl_p50", "e2e_p99")

_LOAD = load_columns()
_LEVEL_FIGURES = tuple(c for c in _LOAD if c.name in LOAD_FIGURES)  # in the Load sheet's order


@dataclass(frozen=True)
class Member:
    """One model of a label's comparison."""

    label: str
    setup: str
    model: str
    """The canonical model ID, as in results."""
    engine: str
    name: str
    """How every view names it: `label (engine)`; `label (engine, setup)`, `label (model)` or `label (model, setup)`
    when the engine alone does not tell two models of the label apart."""

    @property
    def key(self) -> tuple[str, str]:
        return self.setup, self.model


@dataclass(frozen=True)
class Side:
    """One model's figures in one comparison row."""

    member: Member
    status: str
    values: dict[str, float | None]
    """Figure (a column name of TEST_FIGURES or LOAD_FIGURES) → value; None when undefined."""
    ratios: dict[str, float | None]
    """Figure → value ÷ the first side's value (1 for the first side); None when either is None or the first is 0."""


@dataclass(frozen=True)
class PairRow:
    """One test, or one load level, of a label: the sides of the models that ran it, the first one the reference."""

    label: str
    test: str | None
    """The test ID (rows of `LabelPair.tests`), else None."""
    concurrency: int | None
    rate: float | None
    """The load level (rows of `LabelPair.levels`): exactly one is set."""
    sides: tuple[Side, ...]

    @property
    def versus(self) -> Member:
        """The model the ratios are to."""
        return self.sides[0].member


@dataclass(frozen=True)
class LabelPair:
    """Everything compared under one label (two or more models carry it)."""

    label: str
    members: tuple[Member, ...]
    tests: tuple[PairRow, ...]
    levels: tuple[PairRow, ...]


# ---------------------------------------------------------------------------------------------------------- building


def label_pairs(records: Iterable[Mapping[str, Any]]) -> list[LabelPair]:
    """The comparison of every label that two or more models carry, from the records of a results file (read once;
    only records with a `label` are kept), as the workbook builds it (`report.scan_records`, then `pairs_from`)."""
    scan = scan_records(record for record in records if isinstance(record.get("label"), str))
    return pairs_from(scan.rows, scan.labelled_levels, list(scan.order))


def pairs_from(rows: Sequence[SummaryRow], levels: Iterable[Mapping[str, Any]],
               order: Sequence[tuple[str, str]] | None = None) -> list[LabelPair]:
    """The comparison from summary rows (`results.summarize`) and `load_level` records; rows and records without a
    label are ignored. `order` ((setup, model) pairs) decides which model comes first; by default the order of
    `rows`, then of `levels`."""
    labelled_rows = [r for r in rows if r.label is not None]
    labelled_levels = [r for r in levels if isinstance(r.get("label"), str)]
    found: dict[tuple[str, str], tuple[str, str]] = {}  # (setup, model) -> (label, engine)
    for row in labelled_rows:
        found.setdefault((row.setup, row.model), (str(row.label), row.engine))
    for record in labelled_levels:
        found.setdefault((str(record.get("setup")), str(record.get("model"))),
                         (str(record["label"]), str(record.get("engine") or "")))
    rank = {key: i for i, key in enumerate(order or ())}
    keys = sorted(found, key=lambda k: rank.get(k, len(rank)))  # stable: unlisted keys keep their order of appearance

    by_label: dict[str, list[tuple[str, str]]] = {}
    for key in keys:
        by_label.setdefault(found[key][0], []).append(key)
    pairs = []
    for label, member_keys in by_label.items():
        if len(member_keys) < 2:
            continue
        members = _named(label, [(setup, model, found[(setup, model)][1]) for setup, model in member_keys])
        index = {m.key: m for m in members}
        pairs.append(LabelPair(label, tuple(members), _test_rows(label, members, index, labelled_rows),
                               _level_rows(label, members, index, labelled_levels)))
    return pairs


def _named(label: str, members: list[tuple[str, str, str]]) -> list[Member]:
    """Names that tell the label's models apart: the engine if it does, else with the setup, the model ID, or both."""
    ways = (lambda s, m, e: e, lambda s, m, e: f"{e}, {s}", lambda s, m, e: m, lambda s, m, e: f"{m}, {s}")
    for way in ways:
        names = [f"{label} ({way(*member) or '?'})" for member in members]
        if len(set(names)) == len(names):
            break
    return [Member(label, setup, model, engine, name) for (setup, model, engine), name in zip(members, names)]


def _side(member: Member, status: str, values: dict[str, float | None], first: Side | None) -> Side:
    ratios: dict[str, float | None] = {}
    for name, value in values.items():
        base = (first.values if first is not None else values).get(name)
        ratios[name] = value / base if value is not None and base else None
    return Side(member, status, values, ratios)


def _sides(member_values: list[tuple[Member, str, dict[str, float | None]]]) -> tuple[Side, ...]:
    sides: list[Side] = []
    for member, status, values in member_values:
        sides.append(_side(member, status, values, sides[0] if sides else None))
    return tuple(sides)


def cell_figures(row: SummaryRow) -> dict[str, float | None]:
    """The compared figures of one Summary row: the medians of TTFT, E2E and decode rate and the mean output tokens
    over its warm samples, and its pass rate."""
    values: dict[str, float | None] = {}
    for name in TEST_FIGURES[:-1]:
        figure, stat = name.rsplit("_", 1)
        stats = row.stats.get(figure)
        values[name] = number(getattr(stats, stat)) if stats is not None else None
    timed = row.ok + row.failed + row.error
    values["pass_rate"] = row.ok / timed if timed else None
    return values


def _test_rows(label: str, members: list[Member], index: dict[tuple[str, str], Member],
               rows: list[SummaryRow]) -> tuple[PairRow, ...]:
    cells: dict[str, dict[tuple[str, str], SummaryRow]] = {}
    for row in rows:
        if (row.setup, row.model) in index:
            cells.setdefault(row.test, {}).setdefault((row.setup, row.model), row)
    out = []
    for test, by_member in cells.items():
        if len(by_member) < 2:
            continue
        sides = _sides([(m, by_member[m.key].status, cell_figures(by_member[m.key]))
                        for m in members if m.key in by_member])
        out.append(PairRow(label, test, None, None, sides))
    return tuple(out)


def level_figures(record: Mapping[str, Any]) -> dict[str, float | None]:
    """The compared figures of one `load_level` record, as the Load sheet shows them."""
    return dict(zip((c.name for c in _LEVEL_FIGURES), load_values(dict(record), _LEVEL_FIGURES)))


def _level_rows(label: str, members: list[Member], index: dict[tuple[str, str], Member],
                levels: list[Mapping[str, Any]]) -> tuple[PairRow, ...]:
    cells: dict[tuple[Any, Any], dict[tuple[str, str], Mapping[str, Any]]] = {}
    for record in levels:
        key = (str(record.get("setup")), str(record.get("model")))
        if key not in index:
            continue
        level = (number(record.get("concurrency")), number(record.get("rate")))
        held = cells.setdefault(level, {}).get(key)
        if held is None or not (record.get("status") and not held.get("status")):  # a measured level beats a failed one
            cells[level][key] = record
    out = []
    for (concurrency, rate), by_member in sorted(cells.items(), key=lambda kv: (kv[0][1] is not None,
                                                                                 kv[0][0] or kv[0][1] or 0)):
        if len(by_member) < 2:
            continue
        sides = _sides([(m, str(by_member[m.key].get("status") or "ok"), level_figures(by_member[m.key]))
                        for m in members if m.key in by_member])
        out.append(PairRow(label, None, concurrency, rate, sides))  # type: ignore[arg-type]
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------- tables


def _ratio_column(of: Column) -> Column:
    return Column(f"{of.name}_ratio", "ratio",
                  f"{of.name} ÷ the same figure of the model named in versus (1 for that model itself; 0.5: half of "
                  "it). Empty when either value is empty or the reference is 0.", "0.00", max(10.0, len(of.name) + 8))


def _by_name(columns: Iterable[Column], names: Iterable[str]) -> list[Column]:
    found = {c.name: c for c in columns}
    return [found[n] for n in names]


_LABEL = Column("label", "", "The `label:` the models share in the setups file.", None, 16)
_NAME = Column("name", "", "How the side-by-side views and the Load charts name the model: label (engine); the setup "
                           "or the model ID is added when the engine alone does not tell two models of the label "
                           "apart.", None, 24)
_VERSUS = Column("versus", "", "The model the ratios are to: the first model of the label (in the order of the "
                               "results file, which follows the setups file) that has this row's test or level.",
                 None, 24)
_PASS_RATE = Column("pass_rate", "", "Share of the cell's timed samples that passed their check: ok ÷ (ok + failed "
                                     "+ error), the cold sample included; empty when none was timed.", "0%", 9)


def _figure_columns(figures: Iterable[Column]) -> tuple[Column, ...]:
    out: list[Column] = []
    for column in figures:
        out += [column, _ratio_column(column)]
    return tuple(out)


SIDE_COLUMNS: tuple[Column, ...] = (
    _LABEL, TEST_COLUMN, _NAME, SETUP_COLUMN, MODEL_COLUMN, ENGINE_COLUMN,
    Column("status", "", "The cell's status, as in Summary.", None, 11),
    *_figure_columns(_by_name(SUMMARY_COLUMNS, TEST_FIGURES[:-1]) + [_PASS_RATE]),
    _VERSUS,
)
"""The columns of the side-by-side comparison of tests (workbook sheet "Side by side", side_by_side.csv)."""

SIDE_LOAD_COLUMNS: tuple[Column, ...] = (
    _LABEL, *_by_name(_LOAD, ("concurrency", "rate")), _NAME, *_by_name(_LOAD, ("setup", "model", "engine", "status")),
    *_figure_columns(_by_name(_LOAD, LOAD_FIGURES)),
    _VERSUS,
)
"""The columns of the side-by-side comparison of load levels (sheet "Side by side (load)", side_by_side_load.csv)."""


def _table(rows: Iterable[PairRow], columns: tuple[Column, ...]) -> list[list[Any]]:
    out = []
    for row in rows:
        for side in row.sides:
            m = side.member
            values: dict[str, Any] = {"label": row.label, "test": row.test, "concurrency": row.concurrency,
                                      "rate": row.rate, "name": m.name, "setup": m.setup, "model": m.model,
                                      "engine": m.engine, "status": side.status, "versus": row.versus.name}
            values.update(side.values)
            values.update({f"{k}_ratio": v for k, v in side.ratios.items()})
            out.append([values.get(c.name) for c in columns])
    return out


def side_table(pairs: Iterable[LabelPair]) -> list[list[Any]]:
    """One row per label × test × model, in the order of SIDE_COLUMNS; the models of a test are adjacent."""
    return _table((row for pair in pairs for row in pair.tests), SIDE_COLUMNS)


def side_load_table(pairs: Iterable[LabelPair]) -> list[list[Any]]:
    """One row per label × load level × model, in the order of SIDE_LOAD_COLUMNS."""
    return _table((row for pair in pairs for row in pair.levels), SIDE_LOAD_COLUMNS)


def series_names(pairs: Iterable[LabelPair]) -> dict[tuple[str, str], str]:
    """(setup, model) → the name of every model compared under a label."""
    return {m.key: m.name for pair in pairs for m in pair.members}


# ---------------------------------------------------------------------------------------------------------- console


def _shown(value: float | None, ratio: float | None, digits: int, first: bool, percent: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:.0%}" if percent else f"{value:.{digits}f}"
    return text if first or ratio is None else f"{text} ×{ratio:.2f}"


def console_text(pairs: Sequence[LabelPair]) -> str:
    """The side-by-side tables for the console: per label, each test (and load level) with the models that ran it,
    every figure of the second and later models followed by its ratio to the first model's (×0.60)."""
    from .console import table

    blocks = []
    for pair in pairs:
        if not pair.tests and not pair.levels:
            blocks.append(f"Side by side: {pair.label}: {', '.join(m.name for m in pair.members)} have no test or "
                          "load level in common")
            continue
        head = f"Side by side: {pair.label} (×: the ratio to the first model of the row)"
        parts = [head]
        if pair.tests:
            rows = []
            for row in pair.tests:
                for i, side in enumerate(row.sides):
                    v, r = side.values, side.ratios
                    rows.append([row.test if i == 0 else "", side.member.name, status_shown(side.status),
                                 _shown(v["ttft_s_p50"], r["ttft_s_p50"], 3, i == 0),
                                 _shown(v["e2e_s_p50"], r["e2e_s_p50"], 3, i == 0),
                                 _shown(v["decode_tps_p50"], r["decode_tps_p50"], 1, i == 0),
                                 _shown(v["output_tokens_mean"], r["output_tokens_mean"], 1, i == 0),
                                 _shown(v["pass_rate"], r["pass_rate"], 0, i == 0, percent=True)])
            parts.append(table(["test", "model", "status", "ttft p50 s", "e2e p50 s", "decode tok/s", "out tokens",
                                "pass"], rows, indent="  "))
        if pair.levels:
            rows = []
            for row in pair.levels:
                level = f"{row.concurrency} in flight" if row.concurrency is not None else f"{row.rate:g} req/s"
                for i, side in enumerate(row.sides):
                    v, r = side.values, side.ratios
                    rows.append([level if i == 0 else "", side.member.name, status_shown(side.status),
                                 _shown(v["output_tps"], r["output_tps"], 1, i == 0),
                                 _shown(v["request_rate"], r["request_rate"], 2, i == 0),
                                 _shown(v["ttft_p50"], r["ttft_p50"], 3, i == 0),
                                 _shown(v["ttft_p99"], r["ttft_p99"], 3, i == 0),
                                 _shown(v["itl_p50"], r["itl_p50"], 4, i == 0)])
            parts.append(table(["load", "model", "status", "out tok/s", "req/s", "ttft p50 s", "ttft p99 s",
                                "itl p50 s"], rows, indent="  "))
        blocks.append(parts[0] + "\n" + "\n\n".join(parts[1:]))
    return "\n\n".join(blocks)
