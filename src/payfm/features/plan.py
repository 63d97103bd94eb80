"""Grouping of aggregate features into state groups, shared by the offline and online engines.

Aggregates with the same source, entity, filter and resolution read the same events and the same tiles, so
each engine computes one group at a time: one SQL query offline, one state object per entity key online.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from payfm.features.definitions import US, Aggregate, FeatureSet


@dataclass(frozen=True)
class GroupKey:
    source: str
    entity: str
    filter: str | None
    resolution_us: int  # 0 for all-time aggregates


@dataclass
class Group:
    key: GroupKey
    features: list[Aggregate] = field(default_factory=list)

    @property
    def windowed(self) -> bool:
        return self.key.resolution_us > 0

    @property
    def value_columns(self) -> list[str]:
        """Columns whose values the group aggregates, in first-use order."""
        out: list[str] = []
        for f in self.features:
            if f.column is not None and f.column not in out:
                out.append(f.column)
        return out

    @property
    def numeric_columns(self) -> list[str]:
        return [
            c
            for c in self.value_columns
            if any(f.column == c and f.agg != "distinct" and f.agg != "last" for f in self.features)
        ]

    @property
    def distinct_columns(self) -> list[str]:
        return [
            c for c in self.value_columns if any(f.column == c and f.agg == "distinct" for f in self.features)
        ]

    @property
    def minmax_columns(self) -> list[str]:
        return [
            c
            for c in self.value_columns
            if any(f.column == c and f.agg in ("min", "max") for f in self.features)
        ]


def window_tiles(f: Aggregate) -> tuple[int, int]:
    """(window, offset) of a windowed aggregate in tiles of its resolution."""
    assert f.window is not None and f.resolution is not None
    return f.window // f.resolution, f.offset // f.resolution


def groups(fset: FeatureSet) -> list[Group]:
    """The aggregates of ``fset`` grouped by (source, entity, filter, resolution), in first-use order."""
    out: dict[GroupKey, Group] = {}
    for f in fset.aggregates:
        res = 0 if f.resolution is None else int(f.resolution.total_seconds()) * US
        key = GroupKey(f.source, f.entity, f.filter, res)
        out.setdefault(key, Group(key)).features.append(f)
    return list(out.values())
