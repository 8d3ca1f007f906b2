"""The `dla ood` table: a row per (OOD set, method), per-group mean rows (near / far / adversarial, as OpenOOD
reports), inverted scores flagged, and the same table as mean ± std over a sweep's runs.

A group's mean is the unweighted mean of each metric over the group's sets (OpenOOD v1.5's "near-OOD" and
"far-OOD" columns), so a large set does not outweigh a small one. Every group has its mean rows, one set or more
(so a sweep's or a script's "near mean" row is always there), and results.json["groups"] holds the same numbers.

Inverted scores. A score is higher for inputs that look more in-distribution, so AUROC 0.5 is chance and an
AUROC well below it means the score ranks the OOD set *above* the ID data (uniform noise gets a higher softmax
confidence than every MNIST digit: AUROC 0.0000). Such a number is not a weak detector: flipping the sign would make
it a strong one, but only for someone who already knows which OOD data comes. A row with AUROC <= INVERTED_AUROC
(0.4: 0.1 below chance, well outside the sampling noise of a few hundred images per set) is marked with MARK, a
footnote says what it means, and results.json has `"inverted": true` for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dla.ood.data import GROUP_ORDER
from dla.report.tables import fmt_mean_std, mean_std

INVERTED_AUROC = 0.4
MARK = "†"
KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95")
COLUMNS = (("auroc", "AUROC"), ("aupr_in", "AUPR-in"), ("aupr_out", "AUPR-out"), ("fpr95", "FPR95"))
FOOTNOTE = (f"{MARK} inverted: this score ranks OOD above ID (AUROC <= {INVERTED_AUROC:g}, chance is 0.5); the row "
            "is a failure of the score on that set, not a weak detector, and its other columns describe the same "
            "failure.")


def is_inverted(m: dict[str, float]) -> bool:
    return m["auroc"] <= INVERTED_AUROC


@dataclass
class Row:
    """One line of the table: an OOD set, or a group's mean over its sets, scored by one method."""

    group: str
    name: str  # the OOD set as the user wrote it, or "mean of k sets" for a group's mean
    method: str  # the score ("odin tuned" for the grid's point), the key group means and sweeps pool by
    label: str  # the method as shown, e.g. "odin tuned (T=1, eps=0)"
    metrics: dict[str, float]
    members: list[Row] = field(default_factory=list)  # a group mean's rows, one per set; empty for a set's row

    @property
    def inverted(self) -> bool:
        return is_inverted(self.metrics)

    @property
    def sets(self) -> list[str]:
        return [r.name for r in self.members]

    @property
    def inverted_sets(self) -> list[str]:
        return [r.name for r in self.members if r.inverted]


def group_rank(group: str) -> tuple[int, str]:
    return (GROUP_ORDER.index(group), "") if group in GROUP_ORDER else (len(GROUP_ORDER), group)


def group_means(rows: Sequence[Row]) -> list[Row]:
    """Per group (in GROUP_ORDER) and method (in first-seen order): the mean of each metric over the group's sets."""
    out: list[Row] = []
    for group in sorted({r.group for r in rows}, key=group_rank):
        mine = [r for r in rows if r.group == group and not r.members]
        for method in dict.fromkeys(r.method for r in mine):
            members = [r for r in mine if r.method == method]
            means = {k: sum(r.metrics[k] for r in members) / len(members) for k in KEYS}
            label = f"mean of {len(members)} set" + ("s" if len(members) > 1 else "")
            out.append(Row(group, label, method, method, means, members))
    return out


def table_rows(rows: Sequence[Row]) -> list[Row]:
    """The rows as shown: by group (near, far, adversarial, other), each group's sets, then its mean rows."""
    means = group_means(rows)
    out: list[Row] = []
    for group in sorted({r.group for r in rows}, key=group_rank):
        out += [r for r in rows if r.group == group] + [m for m in means if m.group == group]
    return out


def _name_cell(row: Row) -> str:
    bad = row.inverted_sets
    return row.name + (f" ({len(bad)} inverted)" if bad else "")


def ood_table(rows: Sequence[Row], caption: str) -> str:
    """The markdown table of one run: group, set, method, the four metrics; inverted AUROCs marked, footnoted."""
    lines = [caption, "", "| group | OOD set | method | " + " | ".join(h for _, h in COLUMNS) + " |",
             "|---|---|---|" + "---:|" * len(COLUMNS)]
    shown = table_rows(rows)
    for r in shown:
        cells = [f"{r.metrics[k]:.4f}" + (f" {MARK}" if k == "auroc" and r.inverted else "") for k, _ in COLUMNS]
        lines.append(f"| {r.group} | {_name_cell(r)} | {r.label} | " + " | ".join(cells) + " |")
    if any(r.inverted for r in shown):
        lines += ["", FOOTNOTE]
    return "\n".join(lines) + "\n"


def groups_json(rows: Sequence[Row]) -> dict[str, dict]:
    """results.json["groups"]: group -> {"sets", "methods": method -> mean metrics, "inverted", "inverted_sets"}."""
    out: dict[str, dict] = {}
    for m in group_means(rows):
        g = out.setdefault(m.group, {"sets": m.sets, "methods": {}})
        g["methods"][m.method] = {**m.metrics, "inverted": m.inverted, "inverted_sets": m.inverted_sets}
    return out


def sweep_table(configs: Sequence[tuple[str, Sequence[Sequence[Row]]]], caption: str) -> str:
    """One row per (config, group, set or group mean, method): each metric's mean ± sample std over the config's
    runs, and n. `configs`: (label, each run's `table_rows`), every run scored the same way."""
    lines = [caption, "", "| config | group | OOD set | method | " + " | ".join(h for _, h in COLUMNS) + " | n |",
             "|---|---|---|---|" + "---:|" * (len(COLUMNS) + 1)]
    inverted = False
    for label, runs in configs:
        keyed: dict[tuple[str, str, str], list[Row]] = {}
        for rows in runs:
            for r in rows:
                keyed.setdefault((r.group, r.name, r.method), []).append(r)
        for (group, name, method), same in keyed.items():
            auroc = mean_std([r.metrics["auroc"] for r in same])[0]
            bad = auroc <= INVERTED_AUROC
            inverted |= bad
            cells = [fmt_mean_std(k, [r.metrics[k] for r in same]) + (f" {MARK}" if k == "auroc" and bad else "")
                     for k, _ in COLUMNS]
            lines.append(f"| {label} | {group} | {name} | {method} | " + " | ".join(cells) + f" | {len(same)} |")
    if inverted:
        lines += ["", FOOTNOTE.replace("AUROC <=", "mean AUROC <=")]
    return "\n".join(lines) + "\n"


GROUP_COLUMNS = (("auroc", "AUROC", max), ("fpr95", "FPR95", min))


def group_summary_table(runs: Sequence[Sequence[Row]]) -> str:
    """OpenOOD v1.5's layout: one row per method, per group its mean AUROC and FPR95 (mean over the group's sets,
    then mean ± sample std over `runs`, each a run's `table_rows`); the best mean of each column in bold."""
    keyed: dict[tuple[str, str], list[float]] = {}
    methods: dict[str, None] = {}
    groups: dict[str, None] = {}
    for rows in runs:
        for m in (r for r in rows if r.members):  # the group-mean rows
            methods[m.method] = None
            groups[m.group] = None
            for key, _, _ in GROUP_COLUMNS:
                keyed.setdefault((m.group, m.method, key), []).append(m.metrics[key])
    order = sorted(groups, key=group_rank)
    columns = [(g, key, head, best) for g in order for key, head, best in GROUP_COLUMNS]
    winners = {(g, key): best(methods, key=lambda m, g=g, key=key: mean_std(keyed[(g, m, key)])[0])
               for g, key, _, best in columns}
    lines = ["| method | " + " | ".join(f"{g} {head}" for g, _, head, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for method in methods:
        cells = []
        for g, key, _, _ in columns:
            cell = fmt_mean_std(key, keyed[(g, method, key)])
            cells.append(f"**{cell}**" if winners[(g, key)] == method and len(methods) > 1 else cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
