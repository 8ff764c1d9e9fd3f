import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.config import FinetuneConfig
from benchmarks.pmodels import get_arch
from benchmarks.tasks import get_split, save_tasks
from benchmarks.train import finetune_tasks
from methods.base import Bench, Tasks, Zoo
from methods.cond_pdiff import CONDITIONS, SELECTS, CondPDiff
from methods.cond_pdiff_net import CondUNet1D, ParamAutoencoder

# Small networks and budgets: seconds per fit on one CPU thread.
TINY = dict(ae_steps=60, diffusion_steps=30, fold=4, ae_layers=2, ae_width=8, latent_channels=4, unet_width=16,
            emb_dim=32, batch_size=8, sample_steps=4, n_candidates=3, select_shots=3, fewshot_pool=8,
            checkpoint_every=0, log_every=10)


@pytest.fixture(scope="module")
def lora_bench(tiny, tmp_path_factory) -> Bench:
    """The tiny benchmark with a LoRA zoo (adapters + head of cnn-5k-lora, fine-tuned from the same generic)."""
    arch = get_arch("cnn-5k-lora")
    rec = finetune_tasks(tiny.generic, tiny.images, get_split(tiny.tasks, "zoo"), FinetuneConfig(epochs=2, batch_size=32),
                         seed=0, device=torch.device("cpu"), parts_dir=tmp_path_factory.mktemp("lora-parts"), arch=arch)
    zoo = Zoo(rec["task_ids"], rec["classes"], rec["theta"], rec["train_acc"])
    return dataclasses.replace(tiny.bench, arch=arch, zoo=zoo)


def _fit(bench, workdir, **options) -> CondPDiff:
    m = CondPDiff({**TINY, **options}).setup(bench, workdir)
    m.fit(bench, Path(workdir))
    return m


def _tasks(tiny, split="ood") -> Tasks:
    return Tasks.from_records(get_split(tiny.tasks, split))


def test_autoencoder_loss_decreases_and_reconstructs(lora_bench, tmp_path):
    m = _fit(lora_bench, tmp_path, condition="one-hot", ae_steps=300, diffusion_steps=1, ae_width=16)
    ae = m.history["ae"]
    assert ae[-1] < ae[0] / 4, ae
    state = m.load_state()
    assert state["recon_mse"] < 0.1  # normalized units: a zoo vector's coordinates have variance ~1
    # padding: 1008 LoRA + head parameters at K=4 -> 1008 (16 * 63); latent 4 x 63
    assert ParamAutoencoder(1008, fold=4, layers=2).latent_length == 63


@pytest.mark.parametrize("condition", CONDITIONS)
def test_generate_shapes_for_every_condition_and_select_rule(tiny, lora_bench, tmp_path, condition):
    _fit(lora_bench, tmp_path, condition=condition)
    tasks = _tasks(tiny)
    n_params = lora_bench.layout.n_params
    for select in SELECTS:
        fresh = CondPDiff({**TINY, "condition": condition, "select": select}).setup(lora_bench, tmp_path)
        theta = fresh.generate(tasks)
        assert theta.shape == (len(tasks), n_params) and torch.isfinite(theta).all()
        if select == "fewshot-acc":
            assert fresh.last_selection["fewshot_acc"].shape == (len(tasks), TINY["n_candidates"])


def test_fewshot_acc_keeps_the_candidate_best_on_train_shots(tiny, lora_bench, tmp_path):
    """select='fewshot-acc' scores every candidate on `select_shots` train images per class (the Bench's injected
    scorer, here a stand-in that ranks them) and keeps the best; equal accuracies go to the lower loss."""
    _fit(lora_bench, tmp_path, condition="one-hot")
    tasks = _tasks(tiny)
    n, nc = len(tasks), TINY["n_candidates"]
    best = torch.arange(n) % (nc - 1) + 1  # never the first candidate
    seen = []

    def scorer(b, theta, ts, *, shots=None, key=()):
        seen.append((theta.clone(), list(ts.ids), shots, key))
        acc = torch.full(theta.shape[:2], 0.2)
        acc[:, 0] = 0.1  # the first candidate is the worst
        acc[torch.arange(n), best] = 0.8
        loss = torch.ones(theta.shape[:2])
        loss[:, 0] = 0.0  # and has the lowest loss: accuracy comes first
        return acc, loss

    fresh = CondPDiff({**TINY, "condition": "one-hot"}).setup(dataclasses.replace(lora_bench, scorer=scorer), tmp_path)
    theta = fresh.generate(tasks)
    candidates = fresh.candidates(tasks)
    assert len(seen) == 1 and torch.equal(seen[0][0], candidates) and seen[0][1] == tasks.ids
    assert seen[0][2] == TINY["select_shots"]  # a few shots per class, not every train image
    assert torch.equal(theta, candidates[torch.arange(n), best])
    assert torch.equal(fresh.last_selection["chosen"], best)

    def tied(b, theta, ts, *, shots=None, key=()):  # candidates 1 and 2 equally accurate, 2 with the lower loss
        acc, loss = torch.zeros(theta.shape[:2]), torch.ones(theta.shape[:2])
        acc[:, 1:3], loss[:, 2], loss[:, 0] = 0.5, 0.5, 0.0
        return acc, loss

    fresh = CondPDiff({**TINY, "condition": "one-hot"}).setup(dataclasses.replace(lora_bench, scorer=tied), tmp_path)
    assert torch.equal(fresh.generate(tasks), candidates[:, 2])


def test_fewshot_acc_by_the_harness_train_scores(tiny, lora_bench, tmp_path):
    """With the harness's own scoring: the kept candidate has the best accuracy on the task's train shots (the
    lowest loss among equals), and the first candidate is worse for some task."""
    _fit(lora_bench, tmp_path, condition="one-hot")
    tasks = _tasks(tiny)
    m = CondPDiff({**TINY, "condition": "one-hot"}).setup(lora_bench, tmp_path)
    theta, candidates = m.generate(tasks), m.candidates(tasks)
    acc, loss = lora_bench.score_on_train(candidates, tasks, shots=TINY["select_shots"], key=("cond-pdiff", "select"),
                                          loss=True)
    chosen = m.last_selection["chosen"]
    assert torch.equal(theta, candidates[torch.arange(len(tasks)), chosen])
    top = acc == acc.max(1, keepdim=True).values
    assert top[torch.arange(len(tasks)), chosen].all(), (acc, chosen)
    assert torch.equal(loss.masked_fill(~top, float("inf")).min(1).values, loss[torch.arange(len(tasks)), chosen])
    assert (acc[:, 0] < acc.max(1).values).any(), acc  # the case where keeping the first candidate is wrong


def test_generation_is_seeded_and_select_first_is_candidate_zero(tiny, lora_bench, tmp_path):
    _fit(lora_bench, tmp_path, condition="one-hot")
    tasks = _tasks(tiny)
    first = CondPDiff({**TINY, "condition": "one-hot", "select": "first"}).setup(lora_bench, tmp_path).generate(tasks)
    again = CondPDiff({**TINY, "condition": "one-hot", "select": "first"}).setup(lora_bench, tmp_path).generate(tasks)
    mean = CondPDiff({**TINY, "condition": "one-hot", "select": "mean"}).setup(lora_bench, tmp_path).generate(tasks)
    assert torch.equal(first, again)
    assert not torch.allclose(first, mean)


def test_plain_cnn_arch_generates_the_whole_network(tiny, tmp_path):
    m = _fit(tiny.bench, tmp_path, condition="one-hot", select="first")
    theta = m.generate(_tasks(tiny))
    assert theta.shape == (len(_tasks(tiny)), get_arch("cnn-5k").layout(4).n_params)  # 5,172 at K=4


def test_timestep_embedding_is_per_sample():
    """The official UNet embeds time[0] for the whole batch; here each sample's own t must count."""
    torch.manual_seed(0)
    net = CondUNet1D(4, 10, 6, width=16, emb_dim=32).eval()
    with torch.no_grad():
        for p in net.parameters():  # zero-initialized outputs would hide any difference
            p.add_(0.1 * torch.randn_like(p))
        x, cond = torch.randn(2, 4, 10), torch.randn(2, 6)
        both = net(x, torch.tensor([10, 900]), cond)
        alone = torch.cat([net(x[:1], torch.tensor([10]), cond[:1]), net(x[1:], torch.tensor([900]), cond[1:])])
        shared = net(x, torch.tensor([10, 10]), cond)  # what the official bug computes for this batch
    assert torch.allclose(both, alone, atol=1e-5)
    assert torch.allclose(both[0], shared[0], atol=1e-5)
    assert not torch.allclose(both[1], shared[1], atol=1e-3)
    with pytest.raises(ValueError, match="one timestep per sample"):
        net(x, torch.tensor([3]), cond)


def test_task_norm_is_an_id_only_oracle(tiny, lora_bench, tmp_path):
    _fit(lora_bench, tmp_path, condition="one-hot", norm="task", select="first")
    m = CondPDiff({**TINY, "condition": "one-hot", "norm": "task", "select": "first"}).setup(lora_bench, tmp_path)
    assert m.generate(_tasks(tiny, "id")).shape[0] == len(get_split(tiny.tasks, "id"))  # zoo tasks: fine
    with pytest.raises(ValueError, match="ID-only oracle.*ood-"):
        m.generate(_tasks(tiny, "ood"))


def test_bad_inputs_fail_clearly(tiny, lora_bench, tmp_path):
    with pytest.raises(ValueError, match=r"condition 'prompt'.*'class-tokens'"):
        CondPDiff({"condition": "prompt"})
    with pytest.raises(ValueError, match="norm"):
        CondPDiff({"norm": "batch"})
    with pytest.raises(ValueError, match="unknown options"):
        CondPDiff({"conditon": "text"})
    theta = lora_bench.zoo.theta.clone()
    theta[2, 7] = float("nan")
    nan_bench = dataclasses.replace(lora_bench, zoo=dataclasses.replace(lora_bench.zoo, theta=theta))
    with pytest.raises(ValueError, match=lora_bench.zoo.task_ids[2]):
        _fit(nan_bench, tmp_path / "nan")
    wrong = dataclasses.replace(lora_bench, zoo=tiny.bench.zoo)  # a cnn-5k zoo under the LoRA arch
    with pytest.raises(ValueError, match="another arch"):
        _fit(wrong, tmp_path / "wrong")
    m = _fit(lora_bench, tmp_path / "ok", condition="one-hot", select="first")
    with pytest.raises(ValueError, match="'t3'.*3 classes"):
        m.generate(Tasks(["t3"], [lora_bench.class_names[:3]]))
    other = CondPDiff({**TINY, "condition": "text"}).setup(lora_bench, tmp_path / "ok")
    with pytest.raises(ValueError, match="refit"):
        other.generate(_tasks(tiny))


def test_killed_fit_resumes_to_the_same_state(lora_bench, tmp_path, monkeypatch):
    import methods.cond_pdiff as cp
    opts = dict(condition="one-hot", ae_steps=20, diffusion_steps=20, checkpoint_every=5)
    full = _fit(lora_bench, tmp_path / "full", **opts).load_state()
    calls = {"n": 0}
    real = cp.noised

    def dies_at_step_12(*a, **k):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(cp, "noised", dies_at_step_12)
    with pytest.raises(KeyboardInterrupt):
        _fit(lora_bench, tmp_path / "resumed", **opts)
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    monkeypatch.setattr(cp, "noised", real)
    resumed = _fit(lora_bench, tmp_path / "resumed", **opts).load_state()
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()
    for name, t in full["den"].items():
        assert torch.equal(t, resumed["den"][name]), name


def test_generate_in_a_fresh_process(tiny, lora_bench, tmp_path):
    """fit here, generate through the CLI in another process: the same vectors."""
    opts = dict(TINY, condition="one-hot", select="fewshot-acc")
    workdir = tmp_path / "state"
    m = _fit(lora_bench, workdir, **opts)
    expected = m.generate(_tasks(tiny))
    tiny.images.save(tmp_path / "images.pt")
    tiny.generic.save(tmp_path / "generic.pt")
    zoo = lora_bench.zoo
    torch.save({"task_ids": zoo.task_ids, "classes": zoo.classes, "theta": zoo.theta, "train_acc": zoo.train_acc},
               tmp_path / "zoo.pt")
    save_tasks(tiny.tasks, tmp_path / "tasks.json")
    import json
    cmd = [sys.executable, "-m", "benchmarks.cli", "generate", "--method", "cond-pdiff", "--options", json.dumps(opts),
           "--images", str(tmp_path / "images.pt"), "--generic", str(tmp_path / "generic.pt"),
           "--zoo", str(tmp_path / "zoo.pt"), "--arch", "cnn-5k-lora", "--workdir", str(workdir),
           "--tasks", str(tmp_path / "tasks.json"), "--split", "ood", "--out", str(tmp_path / "ood.pt"),
           "--device", "cpu", "--encoder-cache", str(tiny.bench.encoder_cache)]
    code = "import sys; from benchmarks.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, *cmd[3:]], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=Path(__file__).resolve().parent.parent,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = torch.load(tmp_path / "ood.pt", weights_only=True)
    assert torch.equal(out["theta"], expected)


def test_layers_left_out_come_from_classifier_selection(tiny, lora_bench, tmp_path):
    m = _fit(lora_bench, tmp_path, condition="one-hot", select="first", layers=["fc"])
    tasks = _tasks(tiny)
    theta = m.generate(tasks)
    layout = lora_bench.layout
    full = lora_bench.arch.layout(len(lora_bench.class_names))
    cs = full.take_rows(lora_bench.arch.initial_theta(lora_bench.generic.state),
                        tasks.class_indices(lora_bench.class_names))
    head = torch.zeros(layout.n_params, dtype=torch.bool)
    for s in layout.segments:
        head[s.offset:s.stop] = s.name.startswith("fc.")
    assert torch.allclose(theta[:, ~head], cs[:, ~head], atol=1e-5)  # adapters: B = 0 as classifier selection
    assert not torch.allclose(theta[:, head], cs[:, head])  # the head is generated
    assert m.load_state()["mask"].sum() == head.sum()
    with pytest.raises(ValueError, match=r"layers \['conv9'\].*'conv1', 'conv2', 'fc'"):
        _fit(lora_bench, tmp_path / "bad", layers=["conv9"])


def test_zoo_size_fits_on_a_prefix_of_the_zoo(lora_bench, tmp_path):
    m = _fit(lora_bench, tmp_path, condition="one-hot", zoo_size=4, ae_steps=2, diffusion_steps=1)
    seg = lora_bench.layout.segments[-1]  # per-layer statistics come from the first 4 p-Models only
    mean = m.load_state()["norm"]["mean"][seg.offset]
    assert torch.isclose(mean, lora_bench.zoo.theta[:4, seg.offset:seg.stop].float().mean())
    assert not torch.isclose(mean, lora_bench.zoo.theta[:, seg.offset:seg.stop].float().mean())
    with pytest.raises(ValueError, match="exceeds"):
        _fit(lora_bench, tmp_path / "big", zoo_size=len(lora_bench.zoo) + 1)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm-solver"])
def test_sample_steps_set_the_reverse_steps_of_every_sampler(lora_bench, tmp_path, sampler, monkeypatch):
    """`sample_steps` is honoured by DDPM as well (a DDPM-100 run must not silently take 1,000 steps)."""
    m = _fit(lora_bench, tmp_path, condition="one-hot", ae_steps=2, diffusion_steps=1, sampler=sampler, sample_steps=7,
             n_candidates=1, select="first")
    calls = []
    forward = CondUNet1D.forward
    monkeypatch.setattr(CondUNet1D, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    tasks = Tasks(["t"], [lora_bench.class_names[:lora_bench.num_classes]])
    m.generate(tasks)
    assert len(calls) == 7
