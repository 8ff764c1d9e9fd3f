"""zoo-mean, hypernet and noised-neighbour on the tiny bench, with a tiny name -> vector table as the text
encoder (fast)."""

import pytest
import torch

from benchmarks import artifacts
from benchmarks.tasks import get_split
from methods.base import Tasks
from methods.registry import build_method
from tests.helpers import fitted, fresh, table_bench

PERM = torch.tensor([2, 0, 3, 1])  # a reordering of a 4-class prompt


@pytest.fixture(scope="module")
def bench(tiny, tmp_path_factory):
    """The tiny bench with a `table` text encoder: seeded random vectors for its classes."""
    return table_bench(tiny.bench, tmp_path_factory.mktemp("table"), tiny.bench.class_names)




def zoo_tasks(bench, perm=None):
    zoo = bench.zoo
    classes = zoo.classes if perm is None else [[cs[i] for i in perm] for cs in zoo.classes]
    return Tasks(list(zoo.task_ids), classes)


def cs_slice(bench, tasks):
    """Classifier selection (`rule: slice`) computed by hand: the generic model with the task's rows in order."""
    full = bench.arch.layout(len(bench.class_names))
    generic = bench.arch.initial_theta(bench.generic.state)
    return full.take_rows(generic, tasks.class_indices(bench.class_names))


def distance(a, b):
    return (a - b).norm(dim=-1).mean().item()

# ----------------------------------------------------------------------------- zoo-mean


def test_zoo_mean_body_is_the_mean_body_with_cs_rows(bench, tiny, tmp_path):
    layout = bench.layout
    method = fitted("zoo-mean", bench, tmp_path)
    for tasks in (zoo_tasks(bench, PERM), Tasks.from_records(get_split(tiny.tasks, "ood"))):
        theta = fresh("zoo-mean", bench, tmp_path).generate(tasks)
        assert theta.shape == (len(tasks), layout.n_params) and torch.isfinite(theta).all()
        mean_body = layout.body(bench.zoo.theta).mean(0)
        assert torch.allclose(layout.body(theta), mean_body.expand(len(tasks), -1), atol=1e-7)
        cs = cs_slice(bench, tasks)
        assert torch.equal(layout.head_rows(theta), layout.head_rows(cs))  # CS rows in prompt order
        assert not torch.allclose(layout.body(theta), layout.body(cs))  # the body is not the generic's
    # the same as the library's classifier selection, except for the body
    cs = fitted("classifier-selection", bench, tmp_path / "cs", {"rule": "slice"}).generate(zoo_tasks(bench, PERM))
    assert torch.equal(layout.head_rows(method.generate(zoo_tasks(bench, PERM))), layout.head_rows(cs))


def test_zoo_mean_body_rejects_unknown_classes(bench, tmp_path):
    method = fitted("zoo-mean", bench, tmp_path)
    with pytest.raises(ValueError, match="dragon"):
        method.generate(Tasks(["t"], [["dragon"] + bench.class_names[:3]]))

# ----------------------------------------------------------------------------- hypernet


HYPER = {"steps": 300, "width": 32, "heads": 2, "body_hidden": 32, "batch_size": 16, "lr": 3e-3}


@pytest.fixture(scope="module")
def hypernet(bench, tmp_path_factory):
    return fitted("hypernet", bench, tmp_path_factory.mktemp("hypernet"), HYPER)


def test_hypernet_overfits_a_tiny_zoo(hypernet, bench, tmp_path):
    zoo, layout = bench.zoo, bench.layout
    tasks = zoo_tasks(bench)
    theta = fresh("hypernet", bench, hypernet.workdir, HYPER).generate(tasks)
    assert theta.shape == zoo.theta.shape and torch.isfinite(theta).all()
    to_cs = distance(cs_slice(bench, tasks), zoo.theta)
    to_mean = distance(fitted("zoo-mean", bench, tmp_path).generate(tasks), zoo.theta)
    ours = distance(theta, zoo.theta)
    assert ours < 0.25 * to_cs and ours < 0.5 * to_mean  # per task, not only the zoo's mean shift
    head = distance(layout.head_rows(theta).flatten(1), layout.head_rows(zoo.theta).flatten(1))
    head_cs = distance(layout.head_rows(cs_slice(bench, tasks)).flatten(1), layout.head_rows(zoo.theta).flatten(1))
    assert head < 0.25 * head_cs
    losses = hypernet.state["losses"]
    assert losses[-1] < 0.1 * losses[0]


def test_hypernet_untrained_is_zoo_mean_body(bench, tmp_path):
    """Zero-initialized output layers: before any step the net is the zoo-mean body + the mean shift of CS rows."""
    method = fitted("hypernet", bench, tmp_path, {**HYPER, "steps": 1, "lr": 1e-12})
    tasks = zoo_tasks(bench, PERM)
    theta, layout = method.generate(tasks), bench.layout
    expected = fitted("zoo-mean", bench, tmp_path / "zm").generate(tasks)
    assert torch.allclose(layout.body(theta), layout.body(expected), atol=1e-6)
    shift = layout.head_rows(theta) - layout.head_rows(expected)  # the zoo's mean residual to CS, for every row
    assert torch.allclose(shift, method.state["row_mean"].expand_as(shift), atol=1e-6)
    assert shift.abs().max() > 0


def test_hypernet_is_deterministic(hypernet, bench, tmp_path):
    tasks = zoo_tasks(bench)
    again = fitted("hypernet", bench, tmp_path / "same", HYPER)
    assert torch.equal(again.generate(tasks), hypernet.generate(tasks))
    other = fitted("hypernet", bench, tmp_path / "other", {**HYPER, "seed": 1})
    assert not torch.allclose(other.generate(tasks), hypernet.generate(tasks))


def test_hypernet_permuting_the_prompt_permutes_the_rows(hypernet, bench, tiny):
    layout = bench.layout
    tasks = Tasks.from_records(get_split(tiny.tasks, "ood"))
    permuted = Tasks(tasks.ids, [[cs[i] for i in PERM] for cs in tasks.classes])
    a, b = hypernet.generate(tasks), hypernet.generate(permuted)
    assert torch.allclose(layout.body(b), layout.body(a), atol=1e-6)
    assert torch.allclose(layout.head_rows(b), layout.head_rows(a)[:, PERM], atol=1e-5)
    assert not torch.allclose(layout.head_rows(b), layout.head_rows(a), atol=1e-3)  # the rows did move


def test_hypernet_text_only_head(bench, tiny, tmp_path):
    """head_init none: rows from text alone, still fits the zoo heads better than CS."""
    method = fitted("hypernet", bench, tmp_path, {**HYPER, "head_init": "none"})
    tasks, layout = zoo_tasks(bench), bench.layout
    rows = layout.head_rows(method.generate(tasks)).flatten(1)
    target = layout.head_rows(bench.zoo.theta).flatten(1)
    assert distance(rows, target) < 0.5 * distance(layout.head_rows(cs_slice(bench, tasks)).flatten(1), target)
    with pytest.raises(ValueError, match="head_init"):
        build_method("hypernet", {"head_init": "oracle"})

# ----------------------------------------------------------------------------- noised-neighbour


def test_noised_neighbour_at_distance_zero_is_retrieval(bench, tiny, tmp_path):
    zoo, layout = bench.zoo, bench.layout
    method = fitted("noised-neighbour", bench, tmp_path)
    assert torch.equal(fresh("noised-neighbour", bench, tmp_path).generate(zoo_tasks(bench)), zoo.theta)
    expected = layout.assemble(layout.body(zoo.theta), layout.head_rows(zoo.theta)[:, PERM])
    assert torch.equal(method.generate(zoo_tasks(bench, PERM)), expected)  # matched rows in prompt order
    ood = Tasks.from_records(get_split(tiny.tasks, "ood"))
    retrieval = fitted("retrieval", bench, tmp_path / "retrieval")
    assert torch.equal(method.generate(ood), retrieval.generate(ood))


@pytest.mark.parametrize("noise", ["isotropic", "zoo-std"])
def test_noised_neighbour_noise_has_the_set_norm(bench, tiny, tmp_path, noise):
    layout = bench.layout
    tasks = Tasks.from_records(get_split(tiny.tasks, "ood"))
    clean = fitted("noised-neighbour", bench, tmp_path / "clean").generate(tasks)
    opts = {"distance": 0.7, "noise": noise}
    theta = fitted("noised-neighbour", bench, tmp_path / "noisy", opts).generate(tasks)
    assert theta.shape == (len(tasks), layout.n_params) and torch.isfinite(theta).all()
    d = (theta - clean).norm(dim=1)
    assert torch.allclose(d, torch.full_like(d, 0.7), rtol=1e-4)
    assert torch.equal(fresh("noised-neighbour", bench, tmp_path / "noisy", opts).generate(tasks), theta)  # seeded
    delta = theta - clean
    assert not torch.allclose(delta[0], delta[1])  # per task
    other = fitted("noised-neighbour", bench, tmp_path / "seed1", {**opts, "seed": 1}).generate(tasks)
    assert not torch.allclose(other, theta)
    body_share = layout.body(delta).pow(2).sum(1) / delta.pow(2).sum(1)  # fraction of the noise energy in the body
    n_body = layout.body(delta).shape[1]
    if noise == "isotropic":  # ~ the body's share of the coordinates
        assert abs(body_share.mean().item() - n_body / layout.n_params) < 0.05
    else:  # shaped by the zoo's spread: the small conv weights get much less
        assert body_share.mean().item() < 0.5 * n_body / layout.n_params


def test_noised_neighbour_relative_distance_and_generate_time_options(bench, tiny, tmp_path):
    """`distance`, `relative`, `noise` are generate-time options: one fit, several noise sizes (variants)."""
    zoo = bench.zoo
    tasks = Tasks.from_records(get_split(tiny.tasks, "ood"))
    method = fitted("noised-neighbour", bench, tmp_path)
    gaps = torch.cdist(zoo.theta.double(), zoo.theta.double()).fill_diagonal_(float("inf")).min(1).values
    assert method.state["zoo_gap"] == pytest.approx(gaps.median().item(), rel=1e-6) and gaps.median() > 0
    clean = method.generate(tasks)
    for options, expected in [({"distance": 0.5, "relative": True}, 0.5 * gaps.median().item()),
                              ({"distance": 0.3}, 0.3)]:
        theta = fresh("noised-neighbour", bench, tmp_path, options).generate(tasks)
        d = (theta - clean).norm(dim=1)
        assert torch.allclose(d, torch.full_like(d, expected), rtol=1e-4)
    from methods.registry import get_method
    assert {"distance", "relative", "noise", "seed"} <= set(get_method("noised-neighbour").generate_options())
    with pytest.raises(ValueError, match="noise"):
        build_method("noised-neighbour", {"noise": "uniform"})
    with pytest.raises(ValueError, match="distance"):
        build_method("noised-neighbour", {"distance": -1.0})


def test_noised_neighbour_matches_a_generators_distance(bench, tmp_path):
    zoo = bench.zoo
    gaps = torch.cdist(zoo.theta.double(), zoo.theta.double())
    assert gaps[~torch.eye(len(zoo), dtype=torch.bool)].min() > 2 * 0.6  # offsets below stay nearest to their own
    gen = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(3, zoo.theta.shape[1], generator=gen), dim=1)
    fake = zoo.theta[:3] + direction * torch.tensor([[0.2], [0.4], [0.6]])
    path = tmp_path / "generated.pt"
    artifacts.save_torch({"theta": fake}, path)
    method = fitted("noised-neighbour", bench, tmp_path / "m", {"match_vectors": str(path)})
    assert method.state["match_distance"] == method.distance == pytest.approx(0.4, rel=1e-5)  # the median
    theta = method.generate(zoo_tasks(bench))
    assert torch.allclose((theta - zoo.theta).norm(dim=1), torch.full((len(zoo),), 0.4), rtol=1e-4)
    artifacts.save_torch({"theta": torch.zeros(2, 7)}, path)
    with pytest.raises(ValueError, match="parameters"):
        fitted("noised-neighbour", bench, tmp_path / "bad", {"match_vectors": str(path)})

# ----------------------------------------------------------------------------- all three


@pytest.mark.parametrize("name,options", [("zoo-mean", {}), ("hypernet", HYPER),
                                          ("noised-neighbour", {"distance": 0.5})])
def test_generate_shape_and_finite(bench, tiny, tmp_path, name, options):
    tasks = Tasks.from_records(get_split(tiny.tasks, "ood"))
    theta = fitted(name, bench, tmp_path, options).generate(tasks)
    assert theta.shape == (len(tasks), bench.layout.n_params)
    assert torch.isfinite(theta).all()
    cs = cs_slice(bench, tasks)
    assert not torch.allclose(theta, cs)  # none of them is plain classifier selection
