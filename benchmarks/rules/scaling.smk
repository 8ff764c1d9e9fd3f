# The Tina paper's scaling figures (benchmarks/scaling.py), each reports/<fig>.md + reports/figures/<fig>.*:
# - fig4a: p-Acc vs denoiser width, CNN-5K and CNN-14K; fig5: p-Acc vs training p-Models (`zoo_size`);
# - fig4b: parameter inheritance (`init_from: <other dataset>:<label>`; that fit is a DAG input of the fit rule,
#   common.smk's METHOD_INPUTS), p-Acc vs steps from EMA snapshots (`snapshot_steps`, rows `of` it with `at_step`).
# Every point is a label of the config (Tina ablation rows, `report.<fig>.lines`), fitted by rule fit.
# `scaling.archs` are p-Model archs built for these figures only (e.g. cnn-14k): their generic model and zoo come
# from the usual rules, the zoo from the first `zoo_tasks` zoo tasks (fewer rounds than the profile's).
SCALING = wf.scaling_figures(config)
SCALING_ZOO = {a: s["zoo_tasks"] for a, s in wf.scaling_archs(config).items() if s.get("zoo_tasks")}
SCALING_TARGETS = [t for name in SCALING for t in (f"{REPORTS}{name}.md", *(f"{REPORTS}figures/{name}.{ext}" for ext in ("png", "svg", "csv")))]


rule scaling_figure:
    input:
        lambda w: wf.scaling_results(config, w.figure),
    output:
        md=f"{REPORTS}{{figure}}.md",
        csv=f"{REPORTS}figures/{{figure}}.csv",
        png=f"{REPORTS}figures/{{figure}}.png",
        svg=f"{REPORTS}figures/{{figure}}.svg",
    log:
        "data/logs/report/{figure}.log",
    benchmark:
        "data/benchmarks/report/{figure}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    wildcard_constraints:
        figure="|".join(SCALING) or "(?!)",
    params:
        config=workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "nndiff figure {wildcards.figure} {input} --config {params.config} --out {output.md} > {log} 2>&1"


if SCALING_ZOO:

    rule scaling_zoo_tasks:
        input:
            "data/{dataset}/tasks.json",
        output:
            "data/{dataset}/{arch}/zoo-tasks.json",
        log:
            "data/logs/tasks/{dataset}-{arch}-zoo.log",
        benchmark:
            "data/benchmarks/tasks/{dataset}-{arch}-zoo.tsv"
        conda:
            "../../envs/nndiff.yaml"
        wildcard_constraints:
            arch="|".join(SCALING_ZOO),
        params:
            n=lambda w: SCALING_ZOO[w.arch],
        threads: 1
        resources:
            mem_mb=1000,
        shell:
            "python -c 'import sys; from benchmarks.scaling import write_first_zoo_tasks as w; w(*sys.argv[1:])'"
            " {input} {params.n} {output} > {log} 2>&1"

    # The zoo of a scaling arch: the usual fine-tuning recipe on its first `zoo_tasks` zoo tasks.
    rule scaling_finetune_zoo:
        input:
            images="data/{dataset}/images.pt",
            generic=generic_path,
            tasks="data/{dataset}/{arch}/zoo-tasks.json",
            features=features_input,
        output:
            "data/{dataset}/{arch}/finetuned/zoo/shard-{shard}.pt",
        log:
            "data/logs/finetune/{dataset}-{arch}-zoo-{shard}.log",
        benchmark:
            "data/benchmarks/finetune/{dataset}-{arch}-zoo-{shard}.tsv"
        conda:
            "../../envs/nndiff.yaml"
        wildcard_constraints:
            arch="|".join(SCALING_ZOO),
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
            " --split zoo --shard {wildcards.shard} --n-shards {params.n_shards} {params.features}"
            " {params.flags} --seed {params.seed} --device {params.device} --threads {threads} --out {output} 2>&1 | tee {log}"

    ruleorder: scaling_finetune_zoo > finetune
