"""Tina: token layout, row equivariance, padding, exact resume, fresh-process generation, overfitting, errors."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.evaluate import evaluate
from benchmarks.pmodels import get_arch
from benchmarks.tasks import get_split
from methods.base import Tasks, Zoo
from methods.tina import Normalizer, Tina, batch_indices, permute_neurons
from methods.tina_net import TinaNet, TinaNetConfig
from tests.helpers import table_bench

REPO = Path(__file__).resolve().parent.parent
SMALL = dict(width=32, depth=2, heads=4, batch_size=16, log_every=1000)  # a denoiser that trains in seconds


@pytest.fixture(scope="module")
def bench(tiny, tmp_path_factory):
    """The tiny bench with a table text encoder (random vectors: no model to load, distinct per class)."""
    return table_bench(tiny.bench, tmp_path_factory.mktemp("table"), [*tiny.bench.class_names, "<->"])


@pytest.fixture(scope="module")
def padded(bench, tmp_path_factory):
    """A small Tina trained with classification-sequence padding: (options, workdir)."""
    options = dict(SMALL, steps=40, padding=True)
    workdir = tmp_path_factory.mktemp("tina-padded")
    Tina(options).setup(bench, workdir).fit(bench, workdir)
    return options, workdir


def rows_of(bench, theta, k):
    return bench.layout.with_classes(k).head_rows(theta)

# ----------------------------------------------------------------------------- tokens and the denoiser


def test_token_layout_follows_the_paper():
    cnn = get_arch("cnn-5k").layout(10)
    paper = TinaNet(TinaNetConfig(width=16, depth=1, heads=2, text_dim=8, head_tokens="paper"), cnn)
    assert paper.token_sizes() == [432] + [576] * 8 + [320, 10]  # official build_splits: 11 parameter tokens
    assert paper.pos_emb.shape[0] == 11 + 10 + 1  # + 10 class tokens + the timestep: 22 tokens
    rows = TinaNet(TinaNetConfig(width=16, depth=1, heads=2, text_dim=8), cnn)
    assert rows.token_sizes() == [432] + [576] * 8 and rows.row_dim == 33
    head = TinaNet(TinaNetConfig(width=16, depth=1, heads=2, text_dim=8, head_tokens="paper"),
                   get_arch("resnet20-head").layout(10))
    assert head.token_sizes() == [576, 64, 10]  # the official tokenization (docs/design-notes.md §6.3)
    vit = TinaNet(TinaNetConfig(width=16, depth=1, heads=2, text_dim=8), get_arch("vit-b32-head").layout(10))
    body, out = vit(torch.zeros(2, 0), torch.randn(2, 7, 513), torch.randn(2, 7, 8), torch.rand(2))
    assert body.shape == (2, 0) and out.shape == (2, 7, 513)  # head-only: rows only, any K <= 10


@pytest.mark.parametrize("head_tokens", ["rows", "paper"])
def test_chunk_encoders_are_separate_linear_layers(head_tokens):
    """The stacked, zero-padded encoders equal one Linear(size_i, W) per token."""
    layout = get_arch("cnn-5k").layout(4)
    net = TinaNet(TinaNetConfig(width=16, depth=1, heads=2, text_dim=8, max_classes=4, head_tokens=head_tokens), layout)
    theta = torch.randn(3, layout.n_params)
    flat = theta if head_tokens == "paper" else layout.body(theta)
    tokens = torch.cat([flat, torch.zeros(3, 1)], 1)[:, net.index]
    for i, tok in enumerate(net.tokens):
        expect = flat[:, tok.offset:tok.offset + tok.size] @ net.enc_w[i, : tok.size]
        assert torch.allclose(torch.einsum("bm,mw->bw", tokens[:, i], net.enc_w[i]), expect, atol=1e-5)


def test_row_tokens_are_permutation_equivariant():
    layout = get_arch("cnn-5k").layout(4)
    torch.manual_seed(0)
    net = TinaNet(TinaNetConfig(width=32, depth=2, heads=4, text_dim=8, max_classes=4), layout).eval()
    with torch.no_grad():  # zero-init positions would hide an order leak: make them random
        net.pos_emb.normal_()
        net.row_pos.normal_()
    body, rows, text, t = torch.randn(2, 5040), torch.randn(2, 4, 33), torch.randn(2, 4, 8), torch.rand(2)
    perm = torch.tensor([2, 0, 3, 1])
    b1, r1 = net(body, rows, text, t)
    b2, r2 = net(body, rows[:, perm], text[:, perm], t)
    assert torch.allclose(b1, b2, atol=1e-5) and torch.allclose(r1[:, perm], r2, atol=1e-5)

# ----------------------------------------------------------------------------- data handling


@pytest.mark.parametrize("mode", ["zscore-per-coordinate", "per-layer", "none"])
def test_normalizer_round_trip_and_row_symmetry(tiny, mode):
    layout = tiny.bench.layout
    theta = tiny.bench.zoo.theta
    norm = Normalizer.fit(mode, layout.body(theta), layout.head_rows(theta), layout)
    body, rows = norm.normalize(layout.body(theta), layout.head_rows(theta))
    back = layout.assemble(*norm.denormalize(body, rows))
    assert torch.allclose(back, theta, atol=1e-5)
    perm = torch.tensor([3, 1, 0, 2])  # the same statistics for every row: normalizing commutes with permuting
    assert torch.allclose(norm.normalize(body, layout.head_rows(theta)[:, perm])[1], rows[:, perm])


def test_permutation_aug_keeps_each_pmodel_function(tiny):
    layout = tiny.bench.layout
    theta = tiny.bench.zoo.theta[:3]
    permuted = permute_neurons(theta, layout, torch.Generator().manual_seed(0))
    assert not torch.equal(permuted, theta)
    x = tiny.images.test_x[:20].float() / 127.5 - 1
    model = get_arch("cnn-5k").build(4)
    for a, b in zip(theta, permuted):
        out = [torch.func.functional_call(model, layout.unflatten(v), (x,)) for v in (a, b)]
        assert torch.allclose(out[0], out[1], atol=1e-5)
    with pytest.raises(ValueError, match="plain conv layers"):
        permute_neurons(torch.zeros(1, 650), get_arch("resnet20-head").layout(10), torch.Generator())


def test_batches_depend_on_seed_and_step_only():
    a = batch_indices(7, n=6, batch_size=16, seed=0)
    assert torch.equal(a, batch_indices(7, n=6, batch_size=16, seed=0)) and len(a) == 16
    first_epochs = torch.cat([batch_indices(s, n=10, batch_size=5, seed=1) for s in range(2)])
    assert sorted(first_epochs.tolist()) == list(range(10))  # an epoch visits every p-Model once

# ----------------------------------------------------------------------------- fit and generate


def test_generate_permutes_rows_with_the_prompt(bench, padded):
    options, workdir = padded
    tina = Tina(options).setup(bench, workdir)
    classes = bench.class_names[:4]
    perm = [2, 0, 3, 1]
    a = tina.generate(Tasks(["t"], [classes]))
    b = tina.generate(Tasks(["t"], [[classes[i] for i in perm]]))  # same task id: same noise seed
    layout = bench.layout
    assert torch.allclose(layout.body(a), layout.body(b), atol=1e-5)
    assert torch.allclose(rows_of(bench, a, 4)[:, perm], rows_of(bench, b, 4), atol=1e-5)
    assert not torch.allclose(rows_of(bench, a, 4)[:, 0], rows_of(bench, a, 4)[:, 1])  # rows differ by class


@pytest.mark.parametrize("head_tokens", ["rows", "paper"])
def test_padding_serves_every_class_count(bench, padded, tmp_path, head_tokens):
    if head_tokens == "rows":
        options, workdir = padded
    else:
        options, workdir = dict(SMALL, steps=4, padding=True, head_tokens="paper"), tmp_path
        Tina(options).setup(bench, workdir).fit(bench, workdir)
    tina = Tina(options).setup(bench, workdir)
    for k in range(1, 5):
        tasks = Tasks([f"k{k}-{i}" for i in range(2)], [bench.class_names[i:i + k] for i in range(2)])
        theta = tina.generate(tasks)
        assert theta.shape == (2, bench.layout.with_classes(k).n_params) and torch.isfinite(theta).all()


@pytest.mark.parametrize("options", [dict(head_tokens="paper", merge_text=True), dict(merge_text=True, loss="blocks"),
                                     dict(permutation_aug=True, normalization="per-layer", classifier_aug=False),
                                     dict(normalization="none", padding=False)])
def test_ablation_options_fit_and_generate(bench, tmp_path, options):
    tina = Tina(dict(SMALL, steps=3, **options)).setup(bench, tmp_path)
    tina.fit(bench, tmp_path)
    for k in (4, 2):  # unpadded row tokens still take shorter prompts; "paper" pads them
        theta = tina.generate(Tasks(["a", "b"], [bench.class_names[:k], bench.class_names[5:5 + k]]))
        assert theta.shape == (2, bench.layout.with_classes(k).n_params) and torch.isfinite(theta).all()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm-solver"])
def test_samplers(bench, padded, sampler):
    options, workdir = padded
    theta = Tina(dict(options, sampler=sampler, sample_steps=5)).setup(bench, workdir).generate(
        Tasks(["t"], [bench.class_names[:3]]))
    assert theta.shape == (1, bench.layout.with_classes(3).n_params) and torch.isfinite(theta).all()


def test_head_only_arch(bench, tmp_path):
    """ResNet-20's head (64-wide rows, no body): a random zoo is enough to check the plumbing."""
    arch = get_arch("resnet20-head")
    theta = torch.randn(len(bench.zoo), arch.layout(4).n_params)
    head = dataclasses.replace(bench, arch=arch, zoo=dataclasses.replace(bench.zoo, theta=theta))
    tina = Tina(dict(SMALL, steps=3)).setup(head, tmp_path)
    tina.fit(head, tmp_path)
    assert tina.generate(Tasks(["t"], [bench.class_names[:4]])).shape == (1, 4 * 65)


def test_resume_equals_an_uninterrupted_run(bench, tmp_path, monkeypatch):
    options = dict(SMALL, width=16, depth=1, steps=8, checkpoint_every=4, classifier_aug=True, padding=True)
    Tina(options).setup(bench, tmp_path / "once").fit(bench, tmp_path / "once")

    original = Tina._train_step

    def killed_at_step_6(self, net, opt, scheduler, data, step, total, *world):
        if step == 6:  # steps 0-5 done, the checkpoint holds 4: steps 4-5 are lost and redone
            raise KeyboardInterrupt
        return original(self, net, opt, scheduler, data, step, total, *world)

    monkeypatch.setattr(Tina, "_train_step", killed_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        Tina(options).setup(bench, tmp_path / "twice").fit(bench, tmp_path / "twice")
    assert (tmp_path / "twice" / "checkpoint.pt").exists() and not (tmp_path / "twice" / "state.pt").exists()
    monkeypatch.setattr(Tina, "_train_step", original)
    Tina(options).setup(bench, tmp_path / "twice").fit(bench, tmp_path / "twice")  # a fresh instance resumes

    once, twice = (Tina(options).setup(bench, tmp_path / d).load_state() for d in ("once", "twice"))
    for key in ("model", "ema"):
        assert once[key].keys() == twice[key].keys()
        assert all(torch.equal(once[key][n], twice[key][n]) for n in once[key])
    assert not (tmp_path / "twice" / "checkpoint.pt").exists()

    monkeypatch.setattr(Tina, "_train_step", killed_at_step_6)  # a checkpoint of other options is never mixed in
    with pytest.raises(KeyboardInterrupt):
        Tina(options).setup(bench, tmp_path / "x").fit(bench, tmp_path / "x")
    monkeypatch.setattr(Tina, "_train_step", original)
    with pytest.raises(ValueError, match="width"):
        Tina(dict(options, width=32)).setup(bench, tmp_path / "x").fit(bench, tmp_path / "x")


@pytest.mark.slow  # torchrun, two processes
def test_data_parallel_fit_equals_one_process(bench, tmp_path):
    """torchrun with 2 CPU processes (Gloo): each takes half of the same global batch, DDP averages the
    gradients, so the fitted denoiser matches a single-process fit."""
    options = dict(SMALL, width=16, depth=1, steps=6, checkpoint_every=1000)
    Tina(options).setup(bench, tmp_path / "one").fit(bench, tmp_path / "one")
    generic, zoo = tmp_path / "generic.pt", tmp_path / "zoo.pt"
    bench.generic.save(generic)
    torch.save({"task_ids": bench.zoo.task_ids, "classes": bench.zoo.classes, "theta": bench.zoo.theta}, zoo)
    script = tmp_path / "fit.py"
    script.write_text(f"""
import torch
from benchmarks.train import Generic
from methods.base import Bench, Zoo
from methods.tina import Tina
torch.set_num_threads(1)
generic = Generic.load({str(generic)!r})
z = torch.load({str(zoo)!r})
bench = Bench(arch=generic.arch, generic=generic, zoo=Zoo(z["task_ids"], z["classes"], z["theta"], torch.zeros(0)),
              train_x=torch.zeros(0, 3, 32, 32, dtype=torch.uint8), train_y=torch.zeros(0, dtype=torch.long),
              class_names=generic.classes, num_classes={bench.num_classes}, seed={bench.seed},
              text_encoder_spec={bench.text_encoder_spec!r})
Tina({options!r}).setup(bench, {str(tmp_path / "two")!r}).fit(bench, {str(tmp_path / "two")!r})
""")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          "29731", str(script)], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    one, two = (Tina(options).setup(bench, tmp_path / d).load_state() for d in ("one", "two"))
    assert two["step"] == 6 and not (tmp_path / "two" / "checkpoint.pt").exists()
    for name in one["model"]:
        assert torch.allclose(one["model"][name], two["model"][name], atol=1e-5), name
    assert one["losses"] == pytest.approx(two["losses"], rel=1e-4)


def test_world_shares_split_the_global_batch():
    from benchmarks.distributed import World
    shares = [World(rank, 4).share(16) for rank in range(4)]
    assert [(s.start, s.stop) for s in shares] == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert World().share(16) == slice(0, 16) and World().mean(2.5) == 2.5
    with pytest.raises(ValueError, match="multiple"):
        World(0, 3).share(16)


def test_fit_then_generate_in_a_fresh_process(bench, padded, tmp_path):
    options, workdir = padded
    generic = tmp_path / "generic.pt"
    bench.generic.save(generic)
    script = f"""
import torch
from benchmarks.train import Generic
from methods.base import Bench, Tasks, Zoo
from methods.tina import Tina
generic = Generic.load({str(generic)!r})
bench = Bench(arch=generic.arch, generic=generic, zoo=Zoo([], [], torch.zeros(0, 1), torch.zeros(0)),
              train_x=torch.zeros(0, 3, 32, 32, dtype=torch.uint8), train_y=torch.zeros(0, dtype=torch.long),
              class_names=generic.classes, num_classes=4, text_encoder_spec={bench.text_encoder_spec!r})
tasks = Tasks(["a", "b", "c"], [{bench.class_names[:3]!r}] * 3)
theta = Tina({options!r}).setup(bench, {str(workdir)!r}).generate(tasks)
print(tuple(theta.shape), bool(torch.isfinite(theta).all()))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == f"{(3, bench.layout.with_classes(3).n_params)} True"


def test_overfits_a_few_zoo_tasks(bench, tiny, tmp_path):
    """On 3 zoo tasks Tina reproduces working p-Models: accuracy clearly above chance (25% for 4 classes)."""
    zoo = bench.zoo
    small = dataclasses.replace(bench, zoo=Zoo(zoo.task_ids[:3], zoo.classes[:3], zoo.theta[:3], zoo.train_acc[:3]))
    tina = Tina(dict(SMALL, width=64, steps=200, lr=1e-3, batch_size=32)).setup(small, tmp_path)
    tina.fit(small, tmp_path)
    records = get_split(tiny.tasks, "zoo")[:3]
    theta = tina.generate(Tasks.from_records(records))
    acc = evaluate(tiny.generic, tiny.images.test_x, tiny.images.test_y, records, theta)["accuracy"]
    zoo_acc = evaluate(tiny.generic, tiny.images.test_x, tiny.images.test_y, records, zoo.theta[:3])["accuracy"]
    assert acc.mean() > 40 and acc.mean() > zoo_acc.mean() - 15, (acc.tolist(), zoo_acc.tolist())


def test_best_of_several_samples(bench, padded):
    options, workdir = padded
    tasks = Tasks(["t0", "t1"], [bench.class_names[:4], bench.class_names[4:8]])
    theta = Tina(dict(options, n_samples=3)).setup(bench, workdir).generate(tasks)
    assert theta.shape == (2, bench.layout.n_params)


def test_best_of_samples_keeps_the_one_best_on_train_images(bench, padded):
    """n_samples > 1: every sample is scored on the task's train images (the Bench's injected scorer, here a
    stand-in that ranks them) and the best one is kept, not the first."""
    options, workdir = padded
    tasks = Tasks(["t0", "t1"], [bench.class_names[:4], bench.class_names[4:8]])
    best, seen = torch.tensor([2, 1]), []

    def scorer(b, theta, ts, *, shots=None, key=()):
        seen.append((theta.clone(), list(ts.ids), shots))
        acc = torch.full(theta.shape[:2], 0.25)
        acc[torch.arange(len(best)), best] = 0.75  # the first sample is worse for both tasks
        return acc, torch.zeros(theta.shape[:2])

    theta = Tina(dict(options, n_samples=3)).setup(dataclasses.replace(bench, scorer=scorer), workdir).generate(tasks)
    assert len(seen) == 1, "the samples were never scored on train images"
    candidates, ids, shots = seen[0]
    assert candidates.shape == (2, 3, bench.layout.n_params) and ids == tasks.ids and shots is None
    assert not torch.equal(candidates[:, 0], candidates[:, 1])  # distinct samples: the choice matters
    assert torch.equal(theta, candidates[torch.arange(2), best])


def test_best_of_samples_by_the_harness_train_accuracy(bench, padded, tiny):
    """With the harness's own scoring: the kept sample is the most accurate of the task's samples on its train
    images, as the evaluation engine measures it there; the first sample is worse for some task."""
    from benchmarks.evaluate import train_scores
    options, workdir = padded
    records = get_split(tiny.tasks, "zoo")
    tasks, seen = Tasks.from_records(records), []

    def recording(b, theta, ts, **kw):
        seen.append(theta.clone())
        return train_scores(b, theta, ts, **kw)

    n_samples = 4
    tina = Tina(dict(options, n_samples=n_samples)).setup(dataclasses.replace(bench, scorer=recording), workdir)
    theta = tina.generate(tasks)
    candidates = seen[0]  # [n_tasks, n_samples, P]
    acc = torch.stack([torch.tensor(evaluate(tiny.generic, tiny.images.train_x, tiny.images.train_y, records,
                                             candidates[:, j])["accuracy"].to_numpy()) for j in range(n_samples)], 1)
    chosen = torch.tensor([next(j for j in range(n_samples) if torch.equal(theta[i], candidates[i, j]))
                           for i in range(len(tasks))])
    assert torch.equal(acc[torch.arange(len(tasks)), chosen], acc.max(1).values), (acc, chosen)
    assert (acc[:, 0] < acc.max(1).values).any(), acc  # the case where keeping the first sample is wrong

# ----------------------------------------------------------------------------- errors


def test_clear_errors(bench, padded, tiny):
    options, workdir = padded
    tina = Tina(options).setup(bench, workdir)
    with pytest.raises(ValueError, match="empty prompt"):
        tina.generate(Tasks(["t"], [[]]))
    with pytest.raises(ValueError, match="at most 4"):
        tina.generate(Tasks(["t"], [bench.class_names[:5]]))
    with pytest.raises(ValueError, match="different sizes"):
        tina.generate(Tasks(["a", "b"], [bench.class_names[:2], bench.class_names[:3]]))
    other = dataclasses.replace(bench, arch=get_arch("resnet20-head"))
    with pytest.raises(ValueError, match="fitted for arch 'cnn-5k'"):
        Tina(options).setup(other, workdir).generate(Tasks(["t"], [bench.class_names[:4]]))
    with pytest.raises(ValueError, match="head_tokens"):
        Tina({"head_tokens": "columns"})
    with pytest.raises(ValueError, match="unknown sampler"):
        Tina({"sampler": "euler"})
    with pytest.raises(ValueError, match="descriptions"):  # the synthetic dataset ships no class descriptions
        Tina(dict(options, generate_text="descriptions")).setup(bench, workdir).generate(
            Tasks(["t"], [bench.class_names[:4]]))


def test_a_new_option_at_its_default_does_not_void_an_older_fit(bench, tmp_path, monkeypatch):
    """A state written before an option existed (its fit_options lack the key) is still this fit; the same
    state is another fit once the option is set away from its default."""
    options = dict(SMALL, width=16, depth=1, steps=2)
    tina = Tina(options).setup(bench, tmp_path)
    tina.fit(bench, tmp_path)
    state = tina.load_state()
    state["fit_options"].pop("input_norm")  # as written before `input_norm` was added
    tina.save_state(**state)
    monkeypatch.setattr(Tina, "_train_step", lambda *a, **k: pytest.fail("an up-to-date fit trained again"))
    Tina(options).setup(bench, tmp_path).fit(bench, tmp_path)
    assert Tina(dict(options, input_norm=False))._changed_options(state["fit_options"], dict(
        Tina(dict(options, input_norm=False))._fit_options())) == ["input_norm"]
