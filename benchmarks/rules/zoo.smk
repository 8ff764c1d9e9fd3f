rule stage1:
    input:
        images="data/{dataset}/images.pt",
    output:
        "data/{dataset}/{arch}/generic.pt",
    log:
        "data/logs/stage1/{dataset}-{arch}.log",
    benchmark:
        "data/benchmarks/stage1/{dataset}-{arch}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        device=DEVICE,
        flags=train_flags("stage1"),
        seed=config["seed"],
    threads: THREADS
    resources:
        mem_mb=8000,
        gpu=GPU,
    shell:
        "nndiff stage1 --images {input.images} --arch {wildcards.arch} {params.flags} --seed {params.seed}"
        " --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule features:
    input:
        images="data/{dataset}/images.pt",
        generic=generic_path,
    output:
        "data/{dataset}/{arch}/features.pt",
    log:
        "data/logs/features/{dataset}-{arch}.log",
    benchmark:
        "data/benchmarks/features/{dataset}-{arch}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        device=DEVICE,
    threads: THREADS
    resources:
        mem_mb=8000,
        gpu=GPU,
    shell:
        "nndiff features --images {input.images} --generic {input.generic} --device {params.device}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule finetune:
    input:
        images="data/{dataset}/images.pt",
        generic=generic_path,
        tasks="data/{dataset}/tasks.json",
        features=features_input,
    output:
        "data/{dataset}/{arch}/finetuned/{split}/shard-{shard}.pt",
    log:
        "data/logs/finetune/{dataset}-{arch}-{split}-{shard}.log",
    benchmark:
        "data/benchmarks/finetune/{dataset}-{arch}-{split}-{shard}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        device=DEVICE,
        flags=lambda w: train_flags("finetune", w.arch),
        n_shards=len(SHARDS),
        features=features_flag,
        seed=config["seed"],
    threads: THREADS
    resources:
        mem_mb=4000,
        gpu=GPU,
    shell:
        "nndiff finetune --images {input.images} --generic {input.generic} --arch {wildcards.arch} --tasks {input.tasks}"
        " --split {wildcards.split} --shard {wildcards.shard} --n-shards {params.n_shards} {params.features}"
        " {params.flags} --seed {params.seed} --device {params.device} --threads {threads} --out {output} 2>&1 | tee {log}"


rule merge_shards:
    input:
        expand("data/{{dataset}}/{{arch}}/finetuned/{{split}}/shard-{shard}.pt", shard=SHARDS),
    output:
        "data/{dataset}/{arch}/finetuned/{split}.pt",
    log:
        "data/logs/merge/{dataset}-{arch}-{split}.log",
    benchmark:
        "data/benchmarks/merge/{dataset}-{arch}-{split}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "nndiff merge {input} --out {output} > {log} 2>&1"
