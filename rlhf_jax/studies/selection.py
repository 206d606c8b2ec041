"""A setting chosen per group on the validation split before any test cell runs (a
study's learning rate, say), and the rule that grows its grid past an edge.

A choice at the grid's edge says only that the best value may lie beyond it. With
`below` and `above`, the rule is written in the study module before any figure is read
and applied by the runner, not by hand: while a group's best value is the lowest of
those it tried and `below` holds one it has not, that one joins its selection (likewise
`above` at the top); the group's test cells wait until its best value is interior or the
reserve is spent. Other groups choose from the grid as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Selection:
    """Each value is run at `seeds` as a selection cell "select.<group>.<name>=<value>.seed<s>":
    the group's pipeline with `apply(pipeline, value)`, its policy stage and evaluation
    reading data.eval_split = validation (the shared SFT and reward model are the test
    cells' own: choosing reads no test figure). A group's test cells then run with the
    value of the highest mean `metric` over the selection seeds (the first of equals, in
    the order of the values). below, above: values tried one at a time, nearest first,
    when a group's best sits at that edge of the values it tried (`walk`); with them,
    `values` must ascend."""

    name: str
    values: tuple
    apply: Callable
    seeds: tuple[int, ...]
    metric: str = "policy.greedy.gold.mean"
    below: tuple = ()
    above: tuple = ()

    def __post_init__(self):
        if not self.values or not self.seeds:
            raise ValueError(f"selection {self.name}: needs values and seeds")
        if self.below or self.above:
            grid = (*reversed(self.below), *self.values, *self.above)
            if any(a >= b for a, b in zip(grid, grid[1:], strict=False)):
                raise ValueError(
                    f"selection {self.name}: values must ascend, below descend from under them and above ascend "
                    f"from over them; together they read {grid}"
                )

    @property
    def all_values(self) -> tuple:
        """Every value a group may try, in order (the reserve below, the grid, the reserve above)."""
        return (*reversed(self.below), *self.values, *self.above)

    def label(self, value) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    def applied(self, cell, value, group: str = ""):
        """The cell with `value` applied and named in its settings (in `group` if given)."""
        settings = cell.settings + ((self.name, self.label(value)),)
        return type(cell)(group or cell.group, cell.seed, self.apply(cell.pipeline, value), settings)

    def group(self, group: str, value) -> str:
        """The group of a value's selection cells."""
        return f"select.{group}.{self.name}={self.label(value)}"

    def walk(self, mean: Callable[[object], float | None]) -> tuple[list, dict | None]:
        """(the values to try so far, in order; the choice or None) given `mean(value)`, a
        value's mean metric over the seeds (None while a seed's record is missing). The
        choice: {"value", "label", "means" (label -> mean, the values tried), "edge" (the
        value is the lowest or highest tried: the reserve there is spent)}."""
        tried, below, above = list(self.values), list(self.below), list(self.above)
        while True:
            means = {}
            for value in tried:
                m = mean(value)
                if m is None:
                    return tried, None
                means[self.label(value)] = m
            best = max(tried, key=lambda v: means[self.label(v)])  # max keeps the first of equals
            if best == tried[0] and below:
                tried.insert(0, below.pop(0))
            elif best == tried[-1] and above:
                tried.append(above.pop(0))
            else:
                edge = len(tried) > 1 and best in (tried[0], tried[-1])
                return tried, {"value": best, "label": self.label(best), "means": means, "edge": edge}
