# Memorization panel (benchmarks/novelty.py, Zeng et al. 2025): does a generator do more than retrieve?
# Every generated p-Model of a split against its nearest zoo p-Model (hidden units matched, heads aligned by
# class name), the zoo's own nearest-neighbour distances as reference, shared wrong predictions, accuracy vs
# distance: reports/novelty-{method}-{dataset}-{arch}.md, .csv beside it, figure under reports/figures/.
NOVELTY_SPLIT = "ood"
NOVELTY_METHODS = ("tina", "cond-pdiff", "hypernet")  # the generators, where the config has them

NOVELTY_REPORTS = [
    f"{REPORTS}novelty-{m}-{d}-{a}.md"
    for m in NOVELTY_METHODS
    if m in METHODS
    for d, a in PLACES
    if runs_on(m, a)
]


rule novelty:
    input:
        images="data/{dataset}/images.pt",
        generic=generic_path,
        tasks="data/{dataset}/tasks.json",
        zoo="data/{dataset}/{arch}/finetuned/zoo.pt",
        generated=f"data/{{dataset}}/{{arch}}/methods/{{method}}/generated/{NOVELTY_SPLIT}.pt",
        features=features_input,
    output:
        md=f"{REPORTS}novelty-{{method}}-{{dataset}}-{{arch}}.md",
        csv=f"{REPORTS}novelty-{{method}}-{{dataset}}-{{arch}}.csv",
        png=f"{REPORTS}figures/novelty-{{method}}-{{dataset}}-{{arch}}.png",
        svg=f"{REPORTS}figures/novelty-{{method}}-{{dataset}}-{{arch}}.svg",
    log:
        "data/logs/report/novelty-{method}-{dataset}-{arch}.log",
    benchmark:
        "data/benchmarks/report/novelty-{method}-{dataset}-{arch}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        split=NOVELTY_SPLIT,
        features=features_flag,
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "nndiff novelty --images {input.images} --generic {input.generic} --arch {wildcards.arch}"
        " --tasks {input.tasks} --zoo {input.zoo} --split {params.split} --generated {input.generated}"
        " --label {wildcards.method} {params.features} --out {output.md} > {log} 2>&1"
