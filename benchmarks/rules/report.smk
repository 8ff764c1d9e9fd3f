rule table1:
    input:
        results(methods=[*METHODS, *TABLE1_VARIANTS, *ORACLE]),
    output:
        md=f"{REPORTS}table1.md",
        csv=f"{REPORTS}table1.csv",
    log:
        "data/logs/report/table1.log",
    benchmark:
        "data/benchmarks/report/table1.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        config=workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "nndiff report {input} --config {params.config} --benchmarks data/benchmarks/*/*.tsv"
        " --out {output.md} > {log} 2>&1"


rule zoo_report:
    input:
        generic=[f"data/{d}/{get_arch(a).base}/generic.pt" for d, a in PLACES],
        zoo=[f"data/{d}/{a}/finetuned/zoo.pt" for d, a in PLACES],
        accuracy=[f"data/{d}/{a}/results/oracle/zoo.csv" for d, a in PLACES],
    output:
        f"{REPORTS}zoo.md",
    log:
        "data/logs/report/zoo.log",
    benchmark:
        "data/benchmarks/report/zoo.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        config=workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "nndiff zoo-report --generic {input.generic} --zoo {input.zoo} --accuracy {input.accuracy}"
        " --config {params.config} --out {output} > {log} 2>&1"


rule efficiency:
    input:
        images="data/{dataset}/images.pt",
        generic=generic_path,
        zoo="data/{dataset}/{arch}/finetuned/zoo.pt",
        tasks="data/{dataset}/tasks.json",
        fitted=efficiency_fits,
        features=features_input,
    output:
        f"{REPORTS}efficiency-{{dataset}}-{{arch}}.md",
    log:
        "data/logs/report/efficiency-{dataset}-{arch}.log",
    benchmark:
        "data/benchmarks/report/efficiency-{dataset}-{arch}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        methods=efficiency_methods,
        flags=lambda w: train_flags("finetune", w.arch),
        encoder=ENCODER,
        features=features_flag,
        device=DEVICE,
        seed=config["seed"],
    threads: THREADS
    resources:
        mem_mb=8000,
        gpu=GPU,
    shell:
        "nndiff efficiency --images {input.images} --generic {input.generic} --zoo {input.zoo}"
        " --tasks {input.tasks} --split ood --arch {wildcards.arch} {params.features}"
        " --encoder-cache data/cache/encoders --encoder '{params.encoder}' --methods '{params.methods}'"
        " {params.flags} --seed {params.seed} --device {params.device} --threads {threads} --out {output}"
        " > {log} 2>&1"


rule variants:
    input:
        lambda w: results(methods=[*METHODS, *VARIANTS], splits=["ood"]),
    output:
        f"{REPORTS}variants.md",
    log:
        "data/logs/report/variants.log",
    benchmark:
        "data/benchmarks/report/variants.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        config=workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "nndiff report {input} --config {params.config} --title 'Variants on OOD tasks (samplers, steps, condition controls)'"
        " --out {output} > {log} 2>&1"


rule diagnose:
    input:
        images="data/{dataset}/images.pt",
        generic=generic_path,
        tasks="data/{dataset}/tasks.json",
        generated="data/{dataset}/{arch}/methods/{method}/generated/{split}.pt",
        baseline="data/{dataset}/{arch}/methods/classifier-selection-slice/generated/{split}.pt",
        features=features_input,
    output:
        f"{REPORTS}diagnose-{{method}}-{{dataset}}-{{arch}}-{{split}}.md",
    log:
        "data/logs/report/diagnose-{method}-{dataset}-{arch}-{split}.log",
    benchmark:
        "data/benchmarks/report/diagnose-{method}-{dataset}-{arch}-{split}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        features=features_flag,
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "nndiff diagnose --images {input.images} --generic {input.generic} --arch {wildcards.arch}"
        " --tasks {input.tasks} --split {wildcards.split} --generated {input.generated}"
        " --baseline {input.baseline} {params.features} --out {output} > {log} 2>&1"


rule ablation:
    input:
        ablation_results,
    output:
        f"{REPORTS}{{name}}_ablation.md",
    log:
        "data/logs/report/ablation-{name}.log",
    benchmark:
        "data/benchmarks/report/ablation-{name}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        config=workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "nndiff ablation-report {input} --name {wildcards.name} --config {params.config} --out {output} > {log} 2>&1"


rule diagnose_autoencoder:
    input:
        **METHOD_INPUTS,
        tasks="data/{dataset}/tasks.json",
        fitted=method_fit,
    output:
        f"{REPORTS}autoencoder-{{method}}-{{dataset}}-{{arch}}.md",
    log:
        "data/logs/report/autoencoder-{method}-{dataset}-{arch}.log",
    benchmark:
        "data/benchmarks/report/autoencoder-{method}-{dataset}-{arch}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        **METHOD_PARAMS,
    threads: THREADS
    resources:
        mem_mb=8000,
        gpu=GPU,
    shell:
        method_command("diagnose-autoencoder", "--tasks {input.tasks} --seed {params.seed} --device {params.device} --threads {threads} --out {output} > {log} 2>&1")
