"""The one Registry type: built-ins loaded once on first use, both orders, filters, did-you-mean errors, and the
shared option check."""

from __future__ import annotations

import pytest

from dla.errors import ConfigError
from dla.registry import Registry, check_options


class ThingError(ConfigError):
    pass


def test_builtins_load_once_on_first_use_and_names_are_sorted() -> None:
    calls = []
    reg: Registry[int] = Registry("thing", ThingError, builtin=lambda: (calls.append(1), reg.add("b", 2),
                                                                        reg.add("a", 1)))
    assert calls == []
    assert reg.names() == ["a", "b"] and reg.get("b") == 2 and "a" in reg and len(reg) == 2
    assert list(reg) == ["a", "b"] and calls == [1]


def test_an_ordered_registry_keeps_registration_order_and_filters() -> None:
    reg: Registry[int] = Registry("method", ThingError, ordered=True)
    for name, v in (("zeta", 1), ("alpha", 2), ("mid", 3)):
        reg.add(name, v)
    assert reg.names() == ["zeta", "alpha", "mid"]
    assert reg.names(lambda v: v > 1) == ["alpha", "mid"]


def test_unknown_names_get_a_suggestion_in_the_package_error() -> None:
    reg: Registry[int] = Registry("attack", ThingError)
    reg.add("pgd", 1)
    reg.add("fgsm", 2)
    with pytest.raises(ThingError, match=r"unknown attack 'pdg'; known: fgsm, pgd; did you mean 'pgd'\?$"):
        reg.get("pdg")
    with pytest.raises(ValueError, match="attack 'pgd' registered twice"):
        reg.add("pgd", 3)


def test_the_option_check() -> None:
    def attack(model, x, y, eps, steps=10, alpha=None):
        return x

    check_options(attack, ["steps"], "attack 'pgd'", ThingError, skip=4)
    with pytest.raises(ThingError, match=r"attack 'pgd' has no option 'step'; its options: steps, alpha; did you "
                                         r"mean 'steps'\?$"):
        check_options(attack, ["step"], "attack 'pgd'", ThingError, skip=4)
    check_options(lambda model, **kw: None, ["anything"], "score", ThingError, skip=1)
