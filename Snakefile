# nndiff-bench: datasets -> tasks -> generic models -> p-Model zoos -> methods -> per-task accuracies -> reports.
# Run: snakemake --cores 8 reports/table1.md            (profile benchmarks/configs/cpu.yaml)
#      snakemake --cores 2 reports/table1.md --configfile benchmarks/configs/smoke.yaml


# The cpu profile unless another config file is given: Snakemake would merge a default with --configfile.
if not config:

    configfile: "benchmarks/configs/cpu.yaml"


include: "benchmarks/rules/common.smk"
include: "benchmarks/rules/data.smk"
include: "benchmarks/rules/zoo.smk"
include: "benchmarks/rules/methods.smk"
include: "benchmarks/rules/report.smk"


if "glue" in config:

    include: "benchmarks/rules/glue.smk"


rule all:
    input:
        "reports/table1.md",
        "reports/zoo.md",
        "reports/variants.md",
        expand("reports/efficiency-{dataset}-{arch}.md", dataset=DATASETS, arch=ARCHS),
        expand("reports/{name}_ablation.md", name=ABLATIONS),
        [
            diagnostics(m)
            for m in ("tina", "cond-pdiff")
            if m in METHODS and "classifier-selection-slice" in METHODS
        ],
        [
            f"reports/autoencoder-cond-pdiff-{d}-{a}.md"
            for d in DATASETS
            for a in ARCHS
            if "cond-pdiff" in METHODS and runs_on("cond-pdiff", a)
        ],
