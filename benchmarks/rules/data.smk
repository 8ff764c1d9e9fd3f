rule prepare:
    output:
        "data/{dataset}/images.pt",
    log:
        "data/logs/prepare/{dataset}.log",
    benchmark:
        "data/benchmarks/prepare/{dataset}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        kind=lambda w: dataset_cfg(w)["kind"],
        root=lambda w: dataset_cfg(w).get("root", ""),
        options=lambda w: json.dumps(dataset_cfg(w).get("options", {})),
        data_root=data_root(config) or ".",
        download="--download" if config.get("download") else "",
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=8000,
    shell:
        "nndiff prepare --kind {params.kind} --root '{params.root}' --data-root '{params.data_root}'"
        " --options '{params.options}' {params.download} --seed {params.seed} --out {output} > {log} 2>&1"


rule tasks:
    input:
        images="data/{dataset}/images.pt",
    output:
        "data/{dataset}/tasks.json",
    log:
        "data/logs/tasks/{dataset}.log",
    benchmark:
        "data/benchmarks/tasks/{dataset}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        tasks=json.dumps(config["tasks"]),
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "nndiff tasks --images {input.images} --tasks-config '{params.tasks}' --seed {params.seed}"
        " --out {output} > {log} 2>&1"
