"""The lab report: one self-contained HTML page with the verdicts first, then each of the lab's sweeps as
`dla report` shows it (tables, curves, attack tables), its OOD table and its explanation table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dla.labs.plan import LabPlan
from dla.report.html import Report, Section, Text, collection_report, markdown_blocks, render_html


def _sweeps(plan: LabPlan, out: Path) -> list[tuple[str, Path]]:
    names = dict.fromkeys(s.experiment for s in plan.steps if s.command == "sweep")
    return [(e, out / e / plan.sweep_name) for e in names if (out / e / plan.sweep_name / "sweep.csv").is_file()]


def _verdicts(sweeps: list[tuple[str, Path]]) -> list[Any]:
    from dla.report.verdict import sweep_verdicts, verdict_table

    rows = [r for _, sweep in sweeps for r in sweep_verdicts(sweep)[1] if r["values"]]
    if not rows:
        return [Text("No experiment of this lab run has a published number to meet.")]
    return markdown_blocks(verdict_table(rows))


def _sweep_sections(experiment: str, sweep: Path) -> list[Section]:
    from dla.report.collect import collect

    sections = [Section(f"{experiment}: {s.title}", f"{experiment}-{s.id}", s.blocks, s.collapsed)
                for s in collection_report(collect([sweep])).sections]
    for kind, title in (("ood", "OOD detection"), ("explain", "explanations")):
        summary = sweep / kind / "summary.md"
        if summary.is_file():
            sections.append(Section(f"{experiment}: {title}", f"{experiment}-{kind}",
                                    markdown_blocks(summary.read_text())))
    return sections


def lab_report(plan: LabPlan, out: Path) -> Report:
    sweeps = _sweeps(plan, out)
    steps = "\n".join(f"dla {' '.join(s.argv(out, plan.sweep_name, plan.common))}" for s in plan.steps)
    about = Section("This run", "about", [Text(f"Budget {plan.profile!r}: {plan.about}"),
                                          Text(f"dla lab {plan.lab} --budget {plan.profile} ran:"),
                                          Text(steps, pre=True)])
    sections = [about, Section("Against the lab reports", "verdicts", _verdicts(sweeps))]
    for experiment, sweep in sweeps:
        sections += _sweep_sections(experiment, sweep)
    return Report(f"{plan.title} ({plan.profile} budget)", sections)


def write_lab_report(plan: LabPlan, out: Path, target: Path) -> Path:
    from dla.io import atomic_write

    text = render_html(lab_report(plan, out))
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target, "w") as f:
        f.write(text)
    return target
