"""The DAG's first two stages: a raw dataset -> images.pt (`nndiff prepare`), images.pt -> seeded task splits
(`nndiff tasks`)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger("nndiff.dataprep")


def prepare_images(kind: str, out, *, root: str = "", data_root: str | None = None, seed: int = 0,
                   download: bool = False, options: dict | None = None):
    """`nndiff prepare`: dataset `kind` from `root` (relative to `data_root`, benchmarks.datasets.resolve_root;
    synthetic images need none) as validated 32x32 uint8 images at `out`."""
    from benchmarks.datasets import prepare, resolve_root
    options = dict(options or {})
    folder = resolve_root(data_root, root or "") if kind != "synthetic" else Path(".")
    start = time.time()
    data = prepare(kind, folder, seed=seed, download=download, **options)
    data.save(out)
    log.info("prepared %s: %d train / %d test images, %d classes in %.1fs -> %s", kind, len(data.train_y),
             len(data.test_y), len(data.classes), time.time() - start, out)
    return data


def write_tasks(images_path, out, *, tasks_config: dict | None, seed: int) -> dict:
    """`nndiff tasks`: the seeded task splits (zoo, id, ood, unseen-*, padded) of an images file, as JSON;
    `tasks_config`: TasksConfig fields."""
    from benchmarks.config import stage_config
    from benchmarks.datasets import ImageData
    from benchmarks.tasks import TasksConfig, make_tasks, save_tasks
    data = ImageData.load(images_path)
    cfg = stage_config(TasksConfig, tasks_config)
    tasks = make_tasks(data.classes, data.superclasses, cfg, seed)
    save_tasks(tasks, out)
    log.info("tasks: %s -> %s", {k: len(v) for k, v in tasks["splits"].items()}, out)
    return tasks
