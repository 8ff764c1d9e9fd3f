# Head-room over classifier selection per p-Model recipe and generic schedule (benchmarks/headroom.py).
rule stage1_schedule:
    input:
        images="data/{dataset}/images.pt",
    output:
        "data/{dataset}/{arch}/generic-{schedule}.pt",
    log:
        "data/logs/stage1/{dataset}-{arch}-{schedule}.log",
    benchmark:
        "data/benchmarks/stage1/{dataset}-{arch}-{schedule}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    wildcard_constraints:
        schedule="cosine|constant|wsd",
    params:
        device=DEVICE,
        flags=" ".join(f"--{k.replace('_', '-')} {v}" for k, v in config["stage1"].items() if k != "schedule"),
        seed=config["seed"],
    threads: THREADS
    resources:
        mem_mb=8000,
        gpu=GPU,
    shell:
        "nndiff stage1 --images {input.images} --arch {wildcards.arch} {params.flags} --schedule {wildcards.schedule}"
        " --seed {params.seed} --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule headroom_cell:
    input:
        images="data/{dataset}/images.pt",
        generic=headroom_generic,
        tasks="data/{dataset}/tasks.json",
        features=features_input,
    output:
        "data/{dataset}/{arch}/headroom/{schedule}/e{epochs}-lr{lr}.csv",
    log:
        "data/logs/headroom/{dataset}-{arch}-{schedule}-e{epochs}-lr{lr}.log",
    benchmark:
        "data/benchmarks/headroom/{dataset}-{arch}-{schedule}-e{epochs}-lr{lr}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    wildcard_constraints:
        schedule="cosine|constant|wsd",
        epochs=r"\d+",
        lr=r"[0-9.e-]+",
    params:
        device=DEVICE,
        split=HEADROOM.get("split", "zoo"),
        n_tasks=HEADROOM.get("n_tasks", 24),
        features=features_flag,
        batch=config["finetune"].get("batch_size", 128),
        augment=config["finetune"].get("augment", "flip"),
        seed=config["seed"],
    threads: THREADS
    resources:
        mem_mb=4000,
        gpu=GPU,
    shell:
        "nndiff headroom-cell --images {input.images} --generic {input.generic} --arch {wildcards.arch}"
        " --tasks {input.tasks} --split {params.split} --n-tasks {params.n_tasks} {params.features}"
        " --epochs {wildcards.epochs} --lr {wildcards.lr} --batch-size {params.batch} --augment {params.augment}"
        " --seed {params.seed} --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule headroom_report:
    input:
        [c["csv"] for c in headroom_cells()],
    output:
        md=f"{REPORTS}headroom.md",
        csv=f"{REPORTS}headroom.csv",
        figure=f"{REPORTS}figures/headroom.png",
    log:
        "data/logs/report/headroom.log",
    benchmark:
        "data/benchmarks/report/headroom.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        cells=" ".join(f"{c['dataset']}:{c['arch']}:{c['schedule']}:{c['epochs']}:{c['lr']}" for c in headroom_cells()),
        floor=HEADROOM.get("floor", 1.0),
        config=workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "nndiff headroom-report --cell {params.cells} --csv {input} --floor {params.floor}"
        " --config {params.config} --out {output.md} > {log} 2>&1"
