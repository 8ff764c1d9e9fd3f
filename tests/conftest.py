"""Shared fixtures: a tiny synthetic benchmark (images, tasks, generic model, zoo) built in seconds."""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a network in tests
torch.set_num_threads(1)


@dataclass
class Tiny:
    images: object
    tasks: dict
    generic: object
    zoo_record: dict
    bench: object


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    from benchmarks.config import FinetuneConfig, Stage1Config
    from benchmarks.datasets import prepare
    from benchmarks.pmodels import get_arch
    from benchmarks.tasks import TasksConfig, get_split, make_tasks
    from benchmarks.train import finetune_tasks, train_generic
    from methods.base import Bench, Zoo

    images = prepare("synthetic", None, seed=0, n_classes=12, n_train=30, n_test=10, n_superclasses=0)
    cfg = TasksConfig(classes_per_task=4, zoo_rounds=2, n_ood=3, n_id_eval=4, unseen_levels=(0, 50),
                      n_unseen_eval=2, unseen_zoo_rounds=2, padded_sizes=(1, 4), n_padded_per_size=2)
    tasks = make_tasks(images.classes, images.superclasses, cfg, seed=0)
    arch = get_arch("cnn-5k")
    generic = train_generic(arch, images, Stage1Config(epochs=3, batch_size=64), seed=0, device=torch.device("cpu"))
    zoo_tasks = get_split(tasks, "zoo")
    rec = finetune_tasks(generic, images, zoo_tasks, FinetuneConfig(epochs=2, batch_size=32), seed=0,
                         device=torch.device("cpu"), parts_dir=tmp_path_factory.mktemp("parts"))
    zoo = Zoo(rec["task_ids"], rec["classes"], rec["theta"], rec["train_acc"])
    bench = Bench(arch=arch, generic=generic, zoo=zoo, train_x=images.train_x, train_y=images.train_y,
                  class_names=list(images.classes), num_classes=4, seed=0,
                  encoder_cache=tmp_path_factory.mktemp("enc"))
    return Tiny(images, tasks, generic, rec, bench)
