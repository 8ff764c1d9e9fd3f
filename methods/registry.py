"""Method registry: entry points of the group `nndiff.methods`, imported only when asked for by name."""
from __future__ import annotations

from importlib.metadata import entry_points

from methods.base import Method

GROUP = "nndiff.methods"


def available() -> dict[str, str]:
    """Registered name -> 'module:Class' (nothing imported)."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def get_method(name: str) -> type[Method]:
    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    if name not in eps:
        raise ValueError(f"unknown method {name!r}; registered methods: {sorted(eps)}. A new method registers "
                         f"an entry point in the group '{GROUP}' (see README, 'Adding a method').")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"entry point {name!r} -> {eps[name].value} is not a subclass of methods.base.Method")
    return cls


def build_method(name: str, options: dict | None = None) -> Method:
    return get_method(name)(options)
