import torch

from benchmarks.config import FinetuneConfig
from benchmarks.tasks import get_split
from benchmarks.train import augment, derive_seed, finetune_tasks, init_pmodel, task_data


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "finetune", "zoo-00001") == derive_seed(0, "finetune", "zoo-00001")
    assert derive_seed(0, "finetune", "zoo-00001") != derive_seed(0, "finetune", "zoo-00002")
    assert derive_seed(0, "a") != derive_seed(1, "a")


def test_augment_is_seeded_and_keeps_shape():
    x = torch.randn(6, 3, 32, 32)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)


def test_task_data_remaps_labels_to_task_order():
    y = torch.tensor([0, 1, 2, 3, 2, 1])
    x = torch.arange(6)
    xt, yt = task_data(x, y, [2, 0])
    assert xt.tolist() == [0, 2, 4] and yt.tolist() == [1, 0, 0]


def test_init_pmodel_takes_generic_rows_in_task_order(tiny):
    model = init_pmodel(tiny.generic, [5, 1, 3], torch.device("cpu"))
    assert torch.equal(model.fc.weight, tiny.generic.state["fc.weight"][[5, 1, 3]])
    assert torch.equal(model.conv1.weight, tiny.generic.state["conv1.weight"])


def test_generic_and_pmodels_beat_chance(tiny):
    from benchmarks.evaluate import evaluate
    assert tiny.generic.meta["train_acc"] > 2 / 12  # 12 classes: chance 8.3%
    tasks = get_split(tiny.tasks, "zoo")
    df = evaluate(tiny.generic, tiny.images.test_x, tiny.images.test_y, tasks, tiny.zoo_record["theta"])
    assert df["accuracy"].mean() > 2 * 100 / 4  # 4-way tasks: chance 25%


def test_killed_run_resumes_bit_identical(tiny, tmp_path):
    """A run interrupted after two p-Models and rerun equals an uninterrupted run (same seed)."""
    tasks = get_split(tiny.tasks, "ood")
    cfg = FinetuneConfig(epochs=1, batch_size=32)
    cpu = torch.device("cpu")
    full = finetune_tasks(tiny.generic, tiny.images, tasks, cfg, seed=3, device=cpu, parts_dir=tmp_path / "a")
    finetune_tasks(tiny.generic, tiny.images, tasks[:2], cfg, seed=3, device=cpu, parts_dir=tmp_path / "b")
    (tmp_path / "b" / ".junk.tmp").write_bytes(b"half-written")  # what a kill leaves behind: ignored
    resumed = finetune_tasks(tiny.generic, tiny.images, tasks, cfg, seed=3, device=cpu, parts_dir=tmp_path / "b")
    assert torch.equal(full["theta"], resumed["theta"])
    assert full["task_ids"] == resumed["task_ids"]


def test_pmodel_does_not_depend_on_shard(tiny, tmp_path):
    tasks = get_split(tiny.tasks, "ood")
    cfg = FinetuneConfig(epochs=1, batch_size=32)
    cpu = torch.device("cpu")
    whole = finetune_tasks(tiny.generic, tiny.images, tasks, cfg, seed=3, device=cpu, parts_dir=tmp_path / "a")
    last = finetune_tasks(tiny.generic, tiny.images, tasks[-1:], cfg, seed=3, device=cpu, parts_dir=tmp_path / "c")
    assert torch.equal(whole["theta"][-1], last["theta"][0])


def test_lr_schedules_cosine_constant_and_wsd():
    from benchmarks.train import lr_factor
    cos, const, wsd = (lr_factor(s, 100) for s in ("cosine", "constant", "wsd"))
    assert cos(0) == 1 and abs(cos(50) - 0.5) < 1e-12 and cos(100) < 1e-12
    assert const(0) == const(99) == 1
    assert wsd(0) == wsd(79) == 1 and abs(wsd(90) - 0.5) < 1e-12 and wsd(100) < 1e-12  # the last 20% anneal
    import pytest
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_factor("linear", 10)
