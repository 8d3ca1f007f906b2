"""One registry type for every extension point: models, datasets, attacks, OOD scores and detectors, explanations.

A registry maps names to entries (a spec, a class). It loads the package's built-in entries on first use
(`builtin`, a function that imports their modules, whose decorators then call `add`), lists names in one order
(sorted, or registration order where the order means something, as the columns of the explanation grids),
with an optional filter, and refuses an unknown name with one line in the package's own error type, with a
did-you-mean and the known names. `check_options` is the one option check for the callables they hold.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from dla.errors import DlaError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> entries of one kind, e.g. `Registry("attack", AttackError, builtin=_import_builtin)`."""

    def __init__(self, kind: str, error: type[DlaError], builtin: Callable[[], None] | None = None, *,
                 ordered: bool = False) -> None:
        self.kind, self.error, self.ordered = kind, error, ordered
        self._builtin, self._loaded = builtin, builtin is None
        self._entries: dict[str, T] = {}

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # first: a built-in module that lists the registry while importing sees itself
            assert self._builtin is not None
            self._builtin()

    def add(self, name: str, entry: T) -> T:
        """Enrol `entry` as `name`; a second entry of the same name is a bug in the code, not a user error."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def names(self, where: Callable[[T], bool] | None = None) -> list[str]:
        """Every name (sorted, or in registration order for an ordered registry), or those whose entry passes."""
        self._load()
        names = [n for n, e in self._entries.items() if where is None or where(e)]
        return names if self.ordered else sorted(names)

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            known = self.names()
            raise self.error(f"unknown {self.kind} {name!r}; known: {', '.join(known)}" + _did_you_mean(name, known))
        return self._entries[name]

    @property
    def entries(self) -> dict[str, T]:
        """The live mapping (built-ins loaded), for tests that patch an entry with `monkeypatch.setitem`."""
        self._load()
        return self._entries

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def check_options(fn: Callable[..., Any], given: Iterable[str], who: str, error: type[DlaError],
                  skip: int = 0) -> None:
    """Every key of `given` is a keyword parameter of `fn` after its first `skip` ones (unless it takes **kw);
    else one `error` line naming the option and the valid ones."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in given:
        if key not in known:
            raise error(f"{who} has no option {key!r}; its options: {', '.join(known) or 'none'}"
                        + _did_you_mean(key, known))


def _did_you_mean(word: object, known: list[str]) -> str:
    """'; did you mean 'pgd'?' for the closest known name, or ''. Last in the line, so the line still starts with
    what is wrong and what is allowed."""
    close = difflib.get_close_matches(str(word), known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
