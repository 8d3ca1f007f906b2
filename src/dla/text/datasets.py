"""The text datasets: names for `data.name`, next to the image registry's, each with the task that reads it.

A corpus (one long text) trains a language model (task=lm); a sentence set (labelled sentences) trains a
text classifier (task=textcls). The loaders live with their task; this table only names and describes them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextDataset:
    name: str
    task: str  # the config `task` that reads it
    description: str


TEXT_DATASETS: dict[str, TextDataset] = {d.name: d for d in (
    TextDataset("dante_inferno", "lm", "Dante, Inferno (Italian, 187,621 characters; Project Gutenberg)"),
    TextDataset("rotten_tomatoes", "textcls", "Rotten Tomatoes sentence polarity (5,331 + 5,331 sentences)"),
)}


def text_dataset_names() -> list[str]:
    return sorted(TEXT_DATASETS)
