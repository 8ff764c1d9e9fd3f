# Tina Table 5 (memorization; benchmarks/memorization.py), with config `report.table5: {dataset, arch, names,
# descriptions}`: on every task of the split (default ood), the fine-tuned p-Model (oracle) vs the p-Models generated
# from class names and from descriptions, their ensemble, and raw and unit-matched L2 distances (to each other, to
# the nearest zoo p-Model, and the zoo's own nearest-neighbour spacing) -> reports/table5.md and figures/table5.*.
# The inputs are every file `nndiff figure table5` reads (benchmarks.workflow.table5_inputs, by role), so Snakemake
# tracks each; the command resolves the same files from --config and requires them among its arguments.
TABLE5 = wf.table5(config)
TABLE5_REPORTS = (
    [f"{REPORTS}table5.md", *(f"{REPORTS}figures/table5.{ext}" for ext in ("png", "svg", "csv"))] if TABLE5 else []
)


if TABLE5:

    rule table5:
        input:
            **wf.table5_inputs(config),
        output:
            md=f"{REPORTS}table5.md",
            csv=f"{REPORTS}figures/table5.csv",
            png=f"{REPORTS}figures/table5.png",
            svg=f"{REPORTS}figures/table5.svg",
        log:
            "data/logs/report/table5.log",
        benchmark:
            "data/benchmarks/report/table5.tsv"
        conda:
            "../../envs/nndiff.yaml"
        params:
            config=workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml",
        threads: 1
        resources:
            mem_mb=4000,
        shell:
            "nndiff figure table5 {input} --config {params.config} --out {output.md} > {log} 2>&1"
