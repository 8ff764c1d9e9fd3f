"""Tasks are seeded, balanced and well-formed: same seed, same tasks, on any machine (Tina A.1, A.3)."""
import collections
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks.tasks import (KINDS, TasksConfig, get_split, load_tasks, make_tasks, save_tasks,
                              validate_task)

ROOT = Path(__file__).resolve().parent.parent
CIFAR_LIKE = [f"c{i:03d}" for i in range(100)]  # 100 classes ...
SUPERS = [f"super{i // 5:02d}" for i in range(100)]  # ... in 20 superclasses of 5, like CIFAR-100
CALTECH_LIKE = [f"k{i:03d}" for i in range(101)]  # 101 classes, no superclasses, like Caltech-101


@pytest.fixture(scope="module")
def sup_tasks():
    return make_tasks(CIFAR_LIKE, SUPERS, TasksConfig(), seed=0)


@pytest.fixture(scope="module")
def plain_tasks():
    return make_tasks(CALTECH_LIKE, None, TasksConfig(), seed=0)


def _sets(tasks, split):
    return [frozenset(t["classes"]) for t in get_split(tasks, split)]


def _counts(tasks, split):
    return collections.Counter(c for t in get_split(tasks, split) for c in t["classes"])


# ---- determinism ----------------------------------------------------------------------------------

def test_same_seed_same_json_different_seed_different(plain_tasks):
    again = make_tasks(CALTECH_LIKE, None, TasksConfig(), seed=0)
    assert json.dumps(again) == json.dumps(plain_tasks)
    other = make_tasks(CALTECH_LIKE, None, TasksConfig(), seed=1)
    assert other["splits"]["zoo"] != plain_tasks["splits"]["zoo"]
    assert other["splits"]["ood"] != plain_tasks["splits"]["ood"]


def test_same_seed_same_json_superclasses(sup_tasks):
    assert json.dumps(make_tasks(CIFAR_LIKE, SUPERS, TasksConfig(), seed=0)) == json.dumps(sup_tasks)
    assert make_tasks(CIFAR_LIKE, SUPERS, TasksConfig(), seed=1)["splits"] != sup_tasks["splits"]


def test_input_order_does_not_matter(sup_tasks):
    order = list(reversed(range(100)))
    shuffled = make_tasks([CIFAR_LIKE[i] for i in order], [SUPERS[i] for i in order], TasksConfig(), seed=0)
    assert shuffled["splits"] == sup_tasks["splits"]
    assert shuffled["unseen_halves"] == sup_tasks["unseen_halves"]


def test_independent_of_python_hash_seed(sup_tasks, plain_tasks):
    code = ("import json; from benchmarks.tasks import TasksConfig, make_tasks; "
            f"print(json.dumps([make_tasks({CIFAR_LIKE!r}, {SUPERS!r}, TasksConfig(), 0), "
            f"make_tasks({CALTECH_LIKE!r}, None, TasksConfig(), 0)]))")
    hash_seed = "4242" if os.environ.get("PYTHONHASHSEED") != "4242" else "17"  # differ from this process
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == json.dumps([sup_tasks, plain_tasks])


def test_save_load_round_trip(tmp_path, plain_tasks):
    path = tmp_path / "tasks" / "caltech.json"
    save_tasks(plain_tasks, path)
    assert load_tasks(path) == plain_tasks
    assert plain_tasks["config"] == json.loads(json.dumps(plain_tasks["config"]))  # JSON-shaped in memory


# ---- zoo, ID, OOD -----------------------------------------------------------------------------------

def test_zoo_balanced_plain(plain_tasks):
    zoo = get_split(plain_tasks, "zoo")
    assert len(zoo) == 100 * 101 // 10
    assert set(_counts(plain_tasks, "zoo").values()) == {100}  # 100 rounds of 101 classes, nothing dropped
    assert all(len(t["classes"]) == len(set(t["classes"])) == 10 for t in zoo)


def test_zoo_remainder_is_carried_not_dropped():
    tasks = make_tasks(CALTECH_LIKE[:23], None, replace(TasksConfig(), zoo_rounds=7, n_ood=5, n_id_eval=5,
                                                        unseen_zoo_rounds=2, n_unseen_eval=3,
                                                        unseen_levels=(0,), n_padded_per_size=2), seed=3)
    counts = _counts(tasks, "zoo")
    assert len(get_split(tasks, "zoo")) == 7 * 23 // 10
    assert sum(counts.values()) == 160 and max(counts.values()) - min(counts.values()) <= 1


def test_zoo_balanced_superclasses(sup_tasks):
    counts = _counts(sup_tasks, "zoo")
    assert len(get_split(sup_tasks, "zoo")) == 1000 and len(counts) == 100
    assert max(counts.values()) / min(counts.values()) <= 1.2


def test_zoo_sets_unique(sup_tasks, plain_tasks):
    for tasks in (sup_tasks, plain_tasks):
        sets = _sets(tasks, "zoo")
        assert len(set(sets)) == len(sets)


def test_kinds_ratio_3_2_1(sup_tasks):
    for split, n in (("zoo", 1000), ("id", 100), ("ood", 150)):
        kinds = collections.Counter(t["kind"] for t in get_split(sup_tasks, split))
        for kind, share in zip(KINDS, (3 / 6, 2 / 6, 1 / 6)):
            assert abs(kinds[kind] - share * n) <= max(3, 0.02 * n), (split, kinds)


def test_each_kind_matches_its_definition(sup_tasks):
    super_of = dict(zip(CIFAR_LIKE, SUPERS))
    for split in ("zoo", "ood"):
        for t in get_split(sup_tasks, split):
            per_super = collections.Counter(super_of[c] for c in t["classes"])
            assert len(t["classes"]) == len(set(t["classes"])) == 10
            if t["kind"] == "diverse":
                assert len(per_super) == 10
            elif t["kind"] == "shared":
                shared = [s for s, n in per_super.items() if n >= 2]
                assert len(shared) == 1 and 2 <= per_super[shared[0]] <= 5 and len(per_super) >= 2
            else:
                assert t["kind"] == "two-super" and len(per_super) == 2 and min(per_super.values()) >= 1


def test_id_is_first_zoo_tasks(sup_tasks, plain_tasks):
    for tasks in (sup_tasks, plain_tasks):
        assert get_split(tasks, "id") == get_split(tasks, "zoo")[:100]


def test_ood_disjoint_from_zoo_and_unique(sup_tasks, plain_tasks):
    for tasks in (sup_tasks, plain_tasks):
        ood = _sets(tasks, "ood")
        assert len(ood) == 150 and len(set(ood)) == 150
        assert not set(ood) & set(_sets(tasks, "zoo"))


# ---- unseen classes (A.3) ---------------------------------------------------------------------------

def test_unseen_halves_separate_superclass_mates(sup_tasks):
    halves = sup_tasks["unseen_halves"]
    a, b = set(halves["A"]), set(halves["B"])
    assert len(a) == len(b) == 50 and not a & b and a | b == set(CIFAR_LIKE)
    assert halves["rule"].startswith("superclass")
    for s in sorted(set(SUPERS)):
        in_a = sum(c in a for c, sc in zip(CIFAR_LIKE, SUPERS) if sc == s)
        assert in_a in (2, 3)  # 5 mates: split 3/2 or 2/3, never together


def test_unseen_halves_by_similarity():
    sim = np.eye(101)
    for i in range(0, 100, 2):  # k000~k001, k002~k003, ...: each is most similar to its neighbour
        sim[i, i + 1] = sim[i + 1, i] = 0.9
    halves = make_tasks(CALTECH_LIKE, None, TasksConfig(), seed=0, similarity=sim)["unseen_halves"]
    a = set(halves["A"])
    assert halves["rule"].startswith("similarity") and len(a) == 51 and len(halves["B"]) == 50
    assert all((f"k{i:03d}" in a) != (f"k{i + 1:03d}" in a) for i in range(0, 100, 2))


def test_unseen_halves_random_without_structure(plain_tasks):
    halves = plain_tasks["unseen_halves"]
    assert halves["rule"].startswith("random") and len(halves["A"]) == 51 and len(halves["B"]) == 50


def test_unseen_zoo_only_half_a(sup_tasks, plain_tasks):
    for tasks in (sup_tasks, plain_tasks):
        a = set(tasks["unseen_halves"]["A"])
        zoo = get_split(tasks, "unseen-zoo")
        assert len(zoo) == 100 * len(a) // 10
        assert all(set(t["classes"]) <= a for t in zoo)


def test_unseen_levels_take_exactly_their_b_classes(sup_tasks, plain_tasks):
    for tasks in (sup_tasks, plain_tasks):
        b = set(tasks["unseen_halves"]["B"])
        zoo_sets = set(_sets(tasks, "unseen-zoo"))
        for p in (0, 20, 40, 60, 100):
            split = get_split(tasks, f"unseen-{p}")
            assert len(split) == 100 and len(set(_sets(tasks, f"unseen-{p}"))) == 100
            assert all(sum(c in b for c in t["classes"]) == round(p / 100 * 10) for t in split)
            assert all(len(set(t["classes"])) == 10 for t in split)
            assert not zoo_sets & set(_sets(tasks, f"unseen-{p}"))


def test_unseen_half_smaller_than_task_fails():
    with pytest.raises(ValueError, match="half A has 8 classes"):
        make_tasks(CALTECH_LIKE[:15], None, replace(TasksConfig(), zoo_rounds=2, n_ood=3, n_id_eval=1), seed=0)


# ---- padding (Fig. 6b) ------------------------------------------------------------------------------

def test_padded_sizes(sup_tasks):
    padded = get_split(sup_tasks, "padded")
    sizes = collections.Counter(len(t["classes"]) for t in padded)
    assert sizes == {s: 20 for s in range(1, 11)}
    assert all(len(set(t["classes"])) == len(t["classes"]) for t in padded)
    full = {frozenset(t["classes"]) for t in padded if len(t["classes"]) == 10}
    assert not full & set(_sets(sup_tasks, "zoo"))


# ---- errors -----------------------------------------------------------------------------------------

def test_validate_task_lists_offending_names():
    validate_task(["c001", "c002"], CIFAR_LIKE, 10)
    with pytest.raises(ValueError) as err:
        validate_task(["c001", "dragon", "c001", "unicorn"], CIFAR_LIKE, 10)
    msg = str(err.value)
    assert "dragon" in msg and "unicorn" in msg and "duplicate classes ['c001']" in msg
    with pytest.raises(ValueError, match="11 classes, more than the maximum 10"):
        validate_task(CIFAR_LIKE[:11], CIFAR_LIKE, 10)


def test_get_split_lists_available(plain_tasks):
    with pytest.raises(ValueError) as err:
        get_split(plain_tasks, "test")
    for name in ("zoo", "id", "ood", "unseen-zoo", "unseen-40", "padded"):
        assert name in str(err.value)


def test_too_few_classes_fails():
    with pytest.raises(ValueError, match="fewer than classes_per_task=10"):
        make_tasks(CIFAR_LIKE[:9], None, TasksConfig(), seed=0)
