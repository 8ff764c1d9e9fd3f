"""TAPER and zoo retrieval on the tiny bench, with a tiny name -> vector table as the text encoder (fast)."""
import dataclasses

import pytest
import torch

from benchmarks.evaluate import evaluate
from benchmarks.tasks import get_split
from methods.base import Tasks
from methods.registry import build_method
from tests.helpers import fitted, fresh, table_bench

EXTRA = "unicorn"  # embeddable (in the table) but not a dataset class


@pytest.fixture(scope="module")
def bench(tiny, tmp_path_factory):
    """The tiny bench with a `table` text encoder: seeded random vectors for its classes and one extra name."""
    return table_bench(tiny.bench, tmp_path_factory.mktemp("table"), [*tiny.bench.class_names, EXTRA])



# ----------------------------------------------------------------------------- TAPER


@pytest.fixture(scope="module")
def taper(bench, tmp_path_factory):
    return fitted("taper", bench, tmp_path_factory.mktemp("taper"))


def test_taper_shapes_and_fresh_process(taper, bench, tiny):
    tasks = Tasks.from_records(get_split(tiny.tasks, "ood"))
    theta = taper.generate(tasks)
    assert theta.shape == (len(tasks), bench.layout.n_params)
    assert torch.isfinite(theta).all()
    assert torch.equal(fresh("taper", bench, taper.workdir).generate(tasks), theta)


def test_taper_is_deterministic(taper, bench, tiny, tmp_path):
    tasks = Tasks.from_records(get_split(tiny.tasks, "ood"))
    again = fitted("taper", bench, tmp_path)
    assert torch.equal(again.load_state()["experts"], taper.load_state()["experts"])
    assert torch.equal(again.generate(tasks), taper.generate(tasks))


def test_taper_experts_and_mixing_weights(taper, bench, tiny):
    state = taper.load_state()
    experts, generic = state["experts"], bench.generic.flat()
    assert experts.shape == (2, generic.numel())
    assert all(not torch.allclose(e, generic) for e in experts)  # fine-tuned away from stage 1
    assert not torch.allclose(experts[0], experts[1])  # different shards, different experts
    assert sorted(sum(state["shards"], [])) == list(range(len(bench.class_names)))  # disjoint halves
    w = taper.mixing_weights(Tasks.from_records(get_split(tiny.tasks, "ood")))
    assert w.shape == (3, 3, 2)  # [tasks, layers conv1/conv2/fc, experts]
    assert torch.allclose(w.sum(-1), torch.ones(3, 3))
    assert (w >= 0).all()


def test_taper_needs_dataset_classes(taper, bench):
    names = [EXTRA] + bench.class_names[:3]
    with pytest.raises(ValueError, match=rf"TAPER.*{EXTRA}.*head selection"):
        taper.generate(Tasks(["t"], [names]))


def test_taper_beats_chance_on_zoo_tasks(taper, tiny):
    records = get_split(tiny.tasks, "zoo")
    theta = taper.generate(Tasks.from_records(records))
    acc = evaluate(tiny.generic, tiny.images.test_x, tiny.images.test_y, records, theta)["accuracy"]
    assert acc.mean() > 100 / 4 + 10, acc.tolist()  # chance is 25% for 4 classes


def test_taper_cpu_knobs(bench, tmp_path):
    """A capped mixer (one step per task and epoch) and global mixing still give one weight vector per task."""
    method = fitted("taper", bench, tmp_path, {"mixer_steps_per_task": 1, "per_layer": False, "expert_epochs": 1})
    tasks = Tasks(bench.zoo.task_ids, bench.zoo.classes)
    assert method.mixing_weights(tasks).shape == (len(tasks), 1, 2)
    assert method.generate(tasks).shape == (len(tasks), bench.layout.n_params)


def test_taper_rejects_bad_options():
    with pytest.raises(ValueError, match="mixing"):
        build_method("taper", {"mixing": "max"})

# ----------------------------------------------------------------------------- retrieval


@pytest.fixture(scope="module")
def retrieval(bench, tmp_path_factory):
    return fitted("retrieval", bench, tmp_path_factory.mktemp("retrieval"))


def test_retrieval_returns_the_zoo_model_of_a_zoo_task(retrieval, bench):
    zoo = bench.zoo
    theta = fresh("retrieval", bench, retrieval.workdir).generate(Tasks(zoo.task_ids, zoo.classes))
    assert torch.equal(theta, zoo.theta)  # bit-identical


def test_retrieval_permutes_rows_with_the_prompt(retrieval, bench):
    zoo, layout = bench.zoo, bench.layout
    perm = torch.tensor([2, 0, 3, 1])
    tasks = Tasks(zoo.task_ids, [[cs[i] for i in perm] for cs in zoo.classes])
    expected = layout.assemble(layout.body(zoo.theta), layout.head_rows(zoo.theta)[:, perm])
    assert torch.equal(retrieval.generate(tasks), expected)


def test_retrieval_new_names_need_only_text(retrieval, bench):
    theta = retrieval.generate(Tasks(["t"], [[EXTRA] + bench.class_names[:3]]))
    assert theta.shape == (1, bench.layout.n_params)
    with pytest.raises(KeyError, match="dragon"):  # the table encoder cannot embed it
        retrieval.generate(Tasks(["t"], [["dragon"] + bench.class_names[:3]]))


def test_retrieval_top_k_averages(bench, tmp_path):
    zoo = bench.zoo
    method = fitted("retrieval", bench, tmp_path, {"top_k": 2})
    tasks = Tasks(zoo.task_ids[:1], zoo.classes[:1])
    best, cols, scores = method.ranking(tasks)
    assert best.shape == (1, 2) and best[0, 0] == 0 and scores[0, 0] >= scores[0, 1]
    second = bench.layout.head_rows(zoo.theta[best[0, 1]])[cols[0, 1]]
    rows = bench.layout.head_rows(method.generate(tasks))[0]
    assert torch.allclose(rows, (bench.layout.head_rows(zoo.theta[0]) + second) / 2)

# ----------------------------------------------------------------------------- head-only archs


def test_head_only_arch_mixes_and_retrieves_the_head(bench, tmp_path):
    """ResNet-20 head: experts and mixer train `fc` on frozen train features; both methods return fc only."""
    from benchmarks.pmodels import get_arch
    from benchmarks.train import Generic
    arch = get_arch("resnet20-head")
    n_all = len(bench.class_names)
    torch.manual_seed(0)
    generic = Generic(arch, bench.class_names, arch.build(n_all).state_dict(), {})  # untrained: plumbing only
    layout = arch.layout(4)
    zoo = dataclasses.replace(bench.zoo, theta=torch.randn(len(bench.zoo), layout.n_params))
    head = dataclasses.replace(bench, arch=arch, generic=generic, zoo=zoo,
                               train_features=torch.randn(len(bench.train_y), 64))
    tasks = Tasks(zoo.task_ids, zoo.classes)
    for name in ("taper", "retrieval"):
        method = fitted(name, head, tmp_path / name)
        assert method.generate(tasks).shape == (len(tasks), layout.n_params)  # 4 x 64 + 4
    assert fresh("taper", head, tmp_path / "taper").mixing_weights(tasks).shape == (len(tasks), 1, 2)
