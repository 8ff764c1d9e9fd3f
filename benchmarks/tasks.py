"""Personalization tasks: seeded, ordered class lists for the zoo, ID/OOD, unseen-class and padding runs
(Tina, A.1 and A.3; Fig. 6b).

A task is an ordered list of class names; output i of its p-Model means class i. One JSON file per
dataset holds every split, so all methods and machines see the same tasks:

    {"version": 1, "seed": 0, "config": {...}, "classes": [...],
     "unseen_halves": {"A": [...], "B": [...], "rule": "..."},
     "splits": {"zoo": [{"id": "zoo-00012", "classes": [...], "kind": "..."}, ...], "id": ..., ...}}

Determinism: every random choice comes from a `random.Random` seeded by sha256(seed, stream name) and is
made over sorted inputs; sets are used only for membership tests, never iterated, so the tasks do not
depend on PYTHONHASHSEED, on the order `classes` is given in, or on the machine. Each split draws from its
own stream, so changing e.g. `n_ood` does not reshuffle the zoo (except where a drawn set collides).
"""
from __future__ import annotations

import hashlib
import math
import os
import random
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from benchmarks.artifacts import read_json, write_json

VERSION = 1
KINDS = ("diverse", "shared", "two-super")  # CIFAR-100's three task kinds (A.1), in superclass_mix order
_MAX_TRIES = 200  # redraws before a split gives up finding a new class set (pools are tiny only by mistake)
_JITTER = 2.0  # random spread added to use counts: ties and near-ties break randomly, large gaps do not


@dataclass
class TasksConfig:
    """How many tasks of which kind each split gets (defaults = the paper's setup)."""
    classes_per_task: int = 10  # paper: 10-way tasks
    zoo_rounds: int = 100  # rounds of permute-all-classes-and-cut (A.1); 100 x 100/10 = the paper's 1000 p-Models
    n_ood: int = 150  # paper: 150 held-out OOD tasks
    n_id_eval: int = 100  # ID evaluation uses the first n zoo tasks (paper: >= 100 tasks per setting)
    superclass_mix: tuple[int, ...] = (3, 2, 1)  # CIFAR-100 ratio of (diverse, shared, two-super) tasks (A.1)
    unseen_levels: tuple[int, ...] = (0, 20, 40, 60, 100)  # % of classes from the held-out half (Table 3, A.3)
    n_unseen_eval: int = 100  # tasks per unseen level (>= 100 tasks per setting, as for ID/OOD)
    unseen_zoo_rounds: int = 100  # rounds over half A for the unseen-class generator's training zoo
    padded_sizes: tuple[int, ...] = tuple(range(1, 11))  # class counts for the padding experiment (Fig. 6b)
    n_padded_per_size: int = 20  # tasks per class count in Fig. 6b (our choice; the paper does not say)


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------

def _rng(seed: int, stream: str) -> random.Random:
    """An independent generator per split; sha256 (not hash()) so PYTHONHASHSEED cannot leak in."""
    digest = hashlib.sha256(f"nndiff-tasks/{seed}/{stream}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _task(split: str, i: int, classes: Sequence[str], kind: str) -> dict:
    return {"id": f"{split}-{i:05d}", "classes": list(classes), "kind": kind}


def _too_few_sets(what: str, n_pool: int, k: int, wanted: int, have: int) -> ValueError:
    return ValueError(f"{what}: found only {have} of {wanted} distinct {k}-class sets after {_MAX_TRIES} "
                      f"redraws ({math.comb(n_pool, k)} exist among {n_pool} classes, some may be taken "
                      f"by other splits); ask for fewer tasks or use more classes")


def _check_config(cfg: TasksConfig, n_classes: int) -> None:
    k = cfg.classes_per_task
    if k < 1:
        raise ValueError(f"classes_per_task must be >= 1, got {k}")
    if n_classes < k:
        raise ValueError(f"the dataset has {n_classes} classes, fewer than classes_per_task={k}")
    if len(cfg.superclass_mix) != len(KINDS) or min(cfg.superclass_mix) < 0 or sum(cfg.superclass_mix) == 0:
        raise ValueError(f"superclass_mix must be {len(KINDS)} non-negative counts for {KINDS}, "
                         f"got {list(cfg.superclass_mix)}")
    if any(not 0 <= p <= 100 for p in cfg.unseen_levels):
        raise ValueError(f"unseen_levels are percentages in 0..100, got {list(cfg.unseen_levels)}")
    if any(not 1 <= s <= k for s in cfg.padded_sizes):
        raise ValueError(f"padded_sizes must lie in 1..classes_per_task={k}, got {list(cfg.padded_sizes)}")
    if cfg.n_id_eval > cfg.zoo_rounds * n_classes // k:
        raise ValueError(f"n_id_eval={cfg.n_id_eval} exceeds the zoo's {cfg.zoo_rounds * n_classes // k} tasks")


def validate_task(classes_in_task: Sequence[str], known_classes: Sequence[str], max_classes: int) -> None:
    """Raise one ValueError naming every problem of a task: unknown names, duplicates, too many/no classes."""
    known = set(known_classes)
    problems = []
    unknown = [c for c in classes_in_task if c not in known]
    if unknown:
        problems.append(f"unknown classes {unknown} (not among the dataset's {len(known)} classes)")
    seen, dups = set(), []
    for c in classes_in_task:
        if c in seen and c not in dups:
            dups.append(c)
        seen.add(c)
    if dups:
        problems.append(f"duplicate classes {dups}")
    if len(classes_in_task) > max_classes:
        problems.append(f"{len(classes_in_task)} classes, more than the maximum {max_classes}")
    if not classes_in_task:
        problems.append("no classes")
    if problems:
        raise ValueError(f"invalid task {list(classes_in_task)}: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------------
# Plain zoo: permute all classes, cut into groups of k, repeat (A.1)
# ---------------------------------------------------------------------------------------------------

def _first_distinct(pending: list[str], k: int) -> list[int] | None:
    """Indices of the first k distinct names in `pending`, or None if it holds fewer than k distinct."""
    seen, idx = set(), []
    for i, c in enumerate(pending):
        if c not in seen:
            seen.add(c)
            idx.append(i)
            if len(idx) == k:
                return idx
    return None


def _permutation_zoo(split: str, pool: list[str], k: int, rounds: int, rng: random.Random,
                     forbidden: set[frozenset]) -> list[dict]:
    """Balanced tasks from a stream of `rounds` seeded permutations of `pool`, cut into groups of k.

    Remainder: when len(pool) is not a multiple of k, the last group of a round is filled from the next
    round's permutation (a class already in the group is skipped and opens the next group), so every class
    occurs `rounds` times except for at most k-1 entries of the final partial group, which are dropped.
    A group whose class set is in `forbidden` (or already in the zoo) sends the not-yet-used stream back
    through a shuffle; this keeps the class counts exact.
    """
    tasks, pending, taken = [], [], set()
    for _ in range(rounds):
        perm = list(pool)
        rng.shuffle(perm)
        pending.extend(perm)
        while (idx := _first_distinct(pending, k)) is not None:
            for _ in range(_MAX_TRIES):
                group = [pending[i] for i in idx]
                if frozenset(group) not in forbidden and frozenset(group) not in taken:
                    break
                rng.shuffle(pending)  # same multiset, so k distinct names are still there
                idx = _first_distinct(pending, k)
            else:
                raise _too_few_sets(split, len(pool), k, rounds * len(pool) // k, len(tasks))
            for i in reversed(idx):
                del pending[i]
            taken.add(frozenset(group))
            tasks.append(_task(split, len(tasks), group, "permutation"))
    return tasks


def _random_tasks(split: str, pool: list[str], k: int, n: int, rng: random.Random,
                  forbidden: set[frozenset], kind: str = "random") -> list[dict]:
    """n random k-subsets of `pool` in random order, unique as sets and outside `forbidden`."""
    tasks, taken = [], set()
    for _ in range(n):
        for _ in range(_MAX_TRIES):
            group = rng.sample(pool, k)  # a random subset in random order
            if frozenset(group) not in forbidden and frozenset(group) not in taken:
                break
        else:
            raise _too_few_sets(split, len(pool), k, n, len(tasks))
        taken.add(frozenset(group))
        tasks.append(_task(split, len(tasks), group, kind))
    return tasks


# ---------------------------------------------------------------------------------------------------
# Superclass zoo: the three CIFAR-100 task kinds, 3:2:1 (A.1)
# ---------------------------------------------------------------------------------------------------

class _SuperclassSampler:
    """Draws tasks of the three kinds; prefers the least-used classes so class frequency stays balanced.

    Balance: every choice (of superclasses, then of classes inside them) sorts the candidates by
    use count + U(0, jitter), i.e. least used first with near-ties broken at random. With `balance=False`
    (OOD) the counts stay zero and the same code draws uniformly at random.
    """

    def __init__(self, groups: dict[str, list[str]], k: int, rng: random.Random, balance: bool):
        self.groups, self.k, self.rng, self.balance = groups, k, rng, balance
        self.names = sorted(groups)  # superclass names; sorted so the draw order never depends on dicts
        self.count = {c: 0 for s in self.names for c in groups[s]}

    def _order(self, items: list[str], load, jitter: float) -> list[str]:
        keys = [load(x) + self.rng.uniform(0.0, jitter) for x in items]  # one draw per item, in list order
        return [x for _, x in sorted(zip(keys, items))]

    def _classes(self, s: str, n: int, jitter: float) -> list[str]:
        return self._order(self.groups[s], self.count.__getitem__, jitter)[:n]

    def _supers(self, names: list[str], jitter: float) -> list[str]:
        return self._order(names, lambda s: float(np.mean([self.count[c] for c in self.groups[s]])), jitter)

    def diverse(self, jitter: float) -> list[str] | None:
        """(1) k classes from k different superclasses."""
        if len(self.names) < self.k:
            return None
        return [self._classes(s, 1, jitter)[0] for s in self._supers(self.names, jitter)[: self.k]]

    def shared(self, jitter: float) -> list[str] | None:
        """(2) m in 2..min(|S|, k-1) classes from one superclass S (m random), the rest from k-m others."""
        n_super = len(self.names)
        m_lo = max(2, self.k - (n_super - 1))  # the others must come from distinct superclasses
        eligible = [s for s in self.names if min(len(self.groups[s]), self.k - 1) >= m_lo]
        if not eligible:
            return None
        s = self._supers(eligible, jitter)[0]
        m = self.rng.randint(m_lo, min(len(self.groups[s]), self.k - 1))
        others = self._supers([t for t in self.names if t != s], jitter)[: self.k - m]
        return self._classes(s, m, jitter) + [self._classes(t, 1, jitter)[0] for t in others]

    def two_super(self, jitter: float) -> list[str] | None:
        """(3) k classes from exactly two superclasses, a from S1 and k-a from S2, both a, k-a >= 1."""
        size = {s: len(self.groups[s]) for s in self.names}

        def fits(s, t):
            return s != t and self.k >= 2 and size[s] + size[t] >= self.k and min(size[s], size[t]) >= 1

        firsts = [s for s in self.names if any(fits(s, t) for t in self.names)]
        if not firsts:
            return None
        s1 = self._supers(firsts, jitter)[0]
        s2 = self._supers([t for t in self.names if fits(s1, t)], jitter)[0]
        a = self.rng.randint(max(1, self.k - size[s2]), min(size[s1], self.k - 1))
        return self._classes(s1, a, jitter) + self._classes(s2, self.k - a, jitter)

    def draw(self, kind: str, taken: set[frozenset]) -> tuple[list[str], str] | None:
        """A new task of `kind` whose set is not in `taken`; falls back to "diverse" if the kind's pool is
        used up (CIFAR-100 has only C(20, 2) = 190 two-superclass sets of 10), None if that fails too."""
        make = {"diverse": self.diverse, "shared": self.shared, "two-super": self.two_super}
        for kind_ in dict.fromkeys([kind, "diverse"]):  # ordered, de-duplicated
            for attempt in range(_MAX_TRIES):
                group = make[kind_](_JITTER + attempt)  # widen the jitter: later tries are ~uniform
                if group is None:
                    break
                if frozenset(group) not in taken:
                    self.rng.shuffle(group)  # order matters: output i means class i, so vary it
                    if self.balance:
                        for c in group:
                            self.count[c] += 1
                    return group, kind_
        return None


def _superclass_tasks(split: str, groups: dict[str, list[str]], k: int, n: int, mix: Sequence[int],
                      rng: random.Random, forbidden: set[frozenset], balance: bool) -> list[dict]:
    """n tasks whose kinds cycle through superclass_mix (3:2:1 -> D D D S S T ...), so any prefix of the
    list, such as the ID split, keeps the ratio."""
    pattern = [kind for kind, m in zip(KINDS, mix) for _ in range(m)]
    sampler = _SuperclassSampler(groups, k, rng, balance)
    tasks, taken = [], set(forbidden)
    for i in range(n):
        got = sampler.draw(pattern[i % len(pattern)], taken)
        if got is None:
            raise _too_few_sets(split, sum(len(g) for g in groups.values()), k, n, len(tasks))
        group, kind = got
        taken.add(frozenset(group))
        tasks.append(_task(split, i, group, kind))
    return tasks


# ---------------------------------------------------------------------------------------------------
# Unseen-class halves (A.3)
# ---------------------------------------------------------------------------------------------------

def _greedy_pairs(names: list[str], sim: np.ndarray, allowed: np.ndarray) -> list[tuple[str, str]]:
    """Greedy matching: take pairs in order of decreasing similarity while both members are unpaired."""
    iu, ju = np.triu_indices(len(names), k=1)
    ok = allowed[iu, ju]
    iu, ju, vals = iu[ok], ju[ok], sim[iu[ok], ju[ok]]
    order = np.argsort(-vals, kind="stable")  # stable: ties go to the lower (sorted-name) index pair
    paired, pairs = np.zeros(len(names), dtype=bool), []
    for o in order:
        i, j = iu[o], ju[o]
        if not paired[i] and not paired[j]:
            paired[i] = paired[j] = True
            pairs.append((names[i], names[j]))
    return pairs


def _split_halves(names: list[str], super_of: dict[str, str] | None, sim: np.ndarray | None,
                  rng: random.Random) -> dict:
    """Cut the classes into halves A (seen) and B (held out), similar classes in different halves.

    1. Pair similar classes: by greedy similarity matching if `sim` is given (within a superclass when
       superclasses exist), else consecutive classes of a seeded shuffle of each superclass.
    2. Each pair sends one member (coin flip) to A and the other to B.
    3. Classes left unpaired (odd superclasses, odd counts) go one by one to the smaller half, ties to A,
       so |A| = ceil(C/2) and |B| = floor(C/2).
    With neither superclasses nor similarities: a seeded random split.
    """
    n = len(names)
    if super_of is None and sim is None:
        shuffled = list(names)
        rng.shuffle(shuffled)
        a = sorted(shuffled[: (n + 1) // 2])
        return {"A": a, "B": sorted(set(names) - set(a)),
                "rule": "random: seeded random half split (no superclasses or similarities given)"}
    if sim is not None:
        same = (np.ones((n, n), dtype=bool) if super_of is None else
                np.array([[super_of[x] == super_of[y] for y in names] for x in names]))
        pairs = _greedy_pairs(names, sim, same)
        rule = ("similarity: greedy matching of the most similar unpaired classes"
                + (" within each superclass" if super_of is not None else "")
                + "; the two members of each pair go to different halves; leftovers balance the sizes")
    else:
        pairs = []
        for s in sorted(set(super_of.values())):
            members = sorted(c for c in names if super_of[c] == s)
            rng.shuffle(members)
            pairs += [(members[i], members[i + 1]) for i in range(0, len(members) - 1, 2)]
        rule = ("superclass: within each superclass, classes are paired at random (seeded) and the two "
                "members of each pair go to different halves; odd ones out balance the sizes, so every "
                "superclass is split as evenly as possible between A and B")
    half = {"A": [], "B": []}
    for x, y in pairs:
        if rng.random() < 0.5:
            x, y = y, x
        half["A"].append(x)
        half["B"].append(y)
    in_pair = {c for p in pairs for c in p}
    leftovers = [c for c in names if c not in in_pair]
    rng.shuffle(leftovers)
    for c in leftovers:
        half["A" if len(half["A"]) <= len(half["B"]) else "B"].append(c)
    return {"A": sorted(half["A"]), "B": sorted(half["B"]), "rule": rule}


def _unseen_tasks(split: str, a: list[str], b: list[str], k: int, p: int, n: int, rng: random.Random,
                  forbidden: set[frozenset]) -> list[dict]:
    """n tasks with round(p/100 k) classes from half B and the rest from A, shuffled together."""
    n_b = round(p / 100 * k)
    if n_b > len(b) or k - n_b > len(a):
        raise ValueError(f"{split}: needs {n_b} classes from half B ({len(b)}) and {k - n_b} from half A "
                         f"({len(a)})")
    tasks, taken = [], set()
    for _ in range(n):
        for _ in range(_MAX_TRIES):
            group = rng.sample(a, k - n_b) + rng.sample(b, n_b)
            rng.shuffle(group)
            if frozenset(group) not in forbidden and frozenset(group) not in taken:
                break
        else:
            raise _too_few_sets(split, len(a) + len(b), k, n, len(tasks))
        taken.add(frozenset(group))
        tasks.append(_task(split, len(tasks), group, f"unseen-{n_b}of{k}"))
    return tasks


# ---------------------------------------------------------------------------------------------------
# All splits
# ---------------------------------------------------------------------------------------------------

def make_tasks(classes: list[str], superclasses: list[str] | None, cfg: TasksConfig, seed: int,
               similarity: np.ndarray | None = None) -> dict:
    """Every split of one dataset's tasks.

    Args:
        classes: the dataset's class names, in label order (recorded as given; the draws use them sorted).
        superclasses: superclass name of each class, parallel to `classes` (CIFAR-100), or None.
        cfg: split sizes and mix.
        seed: the one seed all splits derive from.
        similarity: optional [C, C] class similarity in `classes` order (e.g. cosine of text embeddings),
            used to separate similar classes into different unseen halves (A.3).
    Returns:
        The tasks dict described in the module docstring; splits zoo, id, ood, unseen-zoo,
        unseen-{p} for p in cfg.unseen_levels, padded.
    """
    classes = list(classes)
    k = cfg.classes_per_task
    if len(set(classes)) != len(classes):
        repeated = sorted({c for c in classes if classes.count(c) > 1})
        raise ValueError(f"class names must be unique; repeated: {repeated}")
    _check_config(cfg, len(classes))
    names = sorted(classes)  # draw over sorted names: the input order cannot change the tasks
    super_of, groups = None, None
    if superclasses is not None:
        if len(superclasses) != len(classes):
            raise ValueError(f"superclasses must give one superclass per class: got {len(superclasses)} "
                             f"for {len(classes)} classes")
        super_of = dict(zip(classes, superclasses))
        groups = {s: sorted(c for c in names if super_of[c] == s) for s in sorted(set(superclasses))}
    sim = None
    if similarity is not None:
        sim = np.asarray(similarity, dtype=np.float64)
        if sim.shape != (len(classes), len(classes)):
            raise ValueError(f"similarity must be [C, C] = [{len(classes)}, {len(classes)}], "
                             f"got {list(sim.shape)}")
        perm = [classes.index(c) for c in names]
        sim = sim[np.ix_(perm, perm)]  # reorder to sorted names
        sim = (sim + sim.T) / 2  # pairing needs a symmetric score

    n_zoo = cfg.zoo_rounds * len(names) // k
    # 1. OOD first: it reserves its sets, then the zoo avoids them. Drawn the other way round, the small
    #    two-superclass pool (CIFAR-100: 190 sets, ~167 used by the zoo) could not give OOD its 1/6 share.
    if groups is None:
        ood = _random_tasks("ood", names, k, cfg.n_ood, _rng(seed, "ood"), set())
    else:
        ood = _superclass_tasks("ood", groups, k, cfg.n_ood, cfg.superclass_mix, _rng(seed, "ood"), set(),
                                balance=False)
    ood_sets = {frozenset(t["classes"]) for t in ood}
    # 2. The zoo: balanced class frequency, unique class sets, none of them an OOD set.
    if groups is None:
        zoo = _permutation_zoo("zoo", names, k, cfg.zoo_rounds, _rng(seed, "zoo"), ood_sets)
    else:
        zoo = _superclass_tasks("zoo", groups, k, n_zoo, cfg.superclass_mix, _rng(seed, "zoo"), ood_sets,
                                balance=True)
    zoo_sets = {frozenset(t["classes"]) for t in zoo}
    # 3. ID evaluation = the zoo's first tasks, same ids (the kind cycle keeps their mix).
    splits = {"zoo": zoo, "id": [dict(t, classes=list(t["classes"])) for t in zoo[: cfg.n_id_eval]], "ood": ood}
    # 4. Unseen classes (A.3): a zoo over half A only, then test tasks with p% of classes from half B.
    halves = _split_halves(names, super_of, sim, _rng(seed, "halves"))
    if len(halves["A"]) < k:
        raise ValueError(f"half A has {len(halves['A'])} classes, fewer than classes_per_task={k}: the "
                         f"unseen-class zoo needs at least {2 * k - 1} classes in the dataset")
    unseen_zoo = _permutation_zoo("unseen-zoo", halves["A"], k, cfg.unseen_zoo_rounds,
                                  _rng(seed, "unseen-zoo"), set())
    splits["unseen-zoo"] = unseen_zoo
    unseen_zoo_sets = {frozenset(t["classes"]) for t in unseen_zoo}
    for p in cfg.unseen_levels:
        splits[f"unseen-{p}"] = _unseen_tasks(f"unseen-{p}", halves["A"], halves["B"], k, p, cfg.n_unseen_eval,
                                              _rng(seed, f"unseen-{p}"), unseen_zoo_sets)
    # 5. Padding (Fig. 6b): s-class tasks; at s == k they are new combinations w.r.t. the zoo.
    padded = []
    for s in cfg.padded_sizes:
        for t in _random_tasks("padded", names, s, cfg.n_padded_per_size, _rng(seed, f"padded-{s}"),
                               zoo_sets if s == k else set(), kind=f"random-{s}"):
            padded.append(_task("padded", len(padded), t["classes"], t["kind"]))
    splits["padded"] = padded

    config = {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(cfg).items()}  # JSON-shaped
    return {"version": VERSION, "seed": seed, "config": config, "classes": classes,
            "unseen_halves": halves, "splits": splits}


# ---------------------------------------------------------------------------------------------------
# Files and look-ups
# ---------------------------------------------------------------------------------------------------

def save_tasks(tasks: dict, path: str | os.PathLike) -> None:
    """Write the tasks JSON atomically (a half-written file never looks finished)."""
    write_json(tasks, path)


def load_tasks(path: str | os.PathLike) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: {'is a directory' if os.path.isdir(path) else 'no such file'}; expected a "
                                "tasks file from `nndiff tasks`")
    tasks = read_json(path)
    version = tasks.get("version") if isinstance(tasks, dict) else None
    if version != VERSION:
        raise ValueError(f"{path}: tasks file version {version!r}, expected {VERSION}; "
                         "regenerate it with `nndiff tasks`")
    return tasks


def get_split(tasks: dict, split: str) -> list[dict]:
    """The tasks of one split; an unknown name fails listing the available ones. `padded-<k>` is the padded
    tasks of k classes (Fig. 6b), one size per split, since one layout serves one generate/evaluate call."""
    splits = tasks["splits"]
    if split.startswith("padded-") and split[len("padded-"):].isdigit() and "padded" in splits:
        k = int(split[len("padded-"):])
        sized = [t for t in splits["padded"] if len(t["classes"]) == k]
        if not sized:
            sizes = sorted({len(t["classes"]) for t in splits["padded"]})
            raise ValueError(f"no padded tasks of {k} classes; sizes: {sizes} (config tasks.padded_sizes)")
        return sized
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; available splits: {', '.join(splits)}")
    return splits[split]
