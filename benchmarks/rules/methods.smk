rule fit:
    input:
        **METHOD_INPUTS,
    output:
        "data/{dataset}/{arch}/methods/{method}/fit.json",
    log:
        "data/logs/fit/{dataset}-{arch}-{method}.log",
    benchmark:
        "data/benchmarks/fit/{dataset}-{arch}-{method}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        **METHOD_PARAMS,
    threads: THREADS
    resources:
        mem_mb=8000,
        gpu=GPU,
    shell:
        method_command("fit", "--seed {params.seed} --device {params.device} --threads {threads} --out {output} 2>&1 | tee {log}")


rule generate:
    input:
        **METHOD_INPUTS,
        tasks="data/{dataset}/tasks.json",
        fitted=method_fit,
    output:
        "data/{dataset}/{arch}/methods/{method}/generated/{split}.pt",
    log:
        "data/logs/generate/{dataset}-{arch}-{method}-{split}.log",
    benchmark:
        "data/benchmarks/generate/{dataset}-{arch}-{method}-{split}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        **METHOD_PARAMS,
    threads: THREADS
    resources:
        mem_mb=8000,
        gpu=GPU,
    shell:
        method_command("generate", "--tasks {input.tasks} --split {wildcards.split} --seed {params.seed} --device {params.device} --threads {threads} --out {output} > {log} 2>&1")


rule oracle:
    input:
        finetuned=lambda w: f"data/{w.dataset}/{w.arch}/finetuned/{finetuned_split(w)}.pt",
        tasks="data/{dataset}/tasks.json",
    output:
        "data/{dataset}/{arch}/methods/oracle/generated/{split}.pt",
    log:
        "data/logs/oracle/{dataset}-{arch}-{split}.log",
    benchmark:
        "data/benchmarks/oracle/{dataset}-{arch}-{split}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "nndiff oracle --finetuned {input.finetuned} --tasks {input.tasks} --split {wildcards.split}"
        " --out {output} > {log} 2>&1"


ruleorder: oracle > generate


rule evaluate:
    input:
        images="data/{dataset}/images.pt",
        generic=generic_path,
        tasks="data/{dataset}/tasks.json",
        vectors="data/{dataset}/{arch}/methods/{method}/generated/{split}.pt",
        features=features_input,
    output:
        "data/{dataset}/{arch}/results/{method}/{split}.csv",
    log:
        "data/logs/evaluate/{dataset}-{arch}-{method}-{split}.log",
    benchmark:
        "data/benchmarks/evaluate/{dataset}-{arch}-{method}-{split}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        device=DEVICE,
        features=features_flag,
    threads: THREADS
    resources:
        mem_mb=4000,
        gpu=GPU,
    shell:
        "nndiff evaluate --images {input.images} --generic {input.generic} --arch {wildcards.arch} --tasks {input.tasks}"
        " --split {wildcards.split} --vectors {input.vectors} {params.features} --label {wildcards.method}"
        " --device {params.device} --threads {threads} --out {output} > {log} 2>&1"
