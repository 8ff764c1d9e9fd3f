# The paper's remaining tables and figures on our tasks:
# - ablations with `report: <stem>` (Tables 6 and 7) are written as reports/<stem>.md, the paper's numbers beside
#   ours (the ablation's `paper:`), by the same `nndiff ablation-report` as reports/<name>_ablation.md;
# - Fig. 6b (config `report.fig6b`): p-Acc vs number of classes on the padded-<k> splits (benchmarks/figures.py).
ABLATION_TABLES = wf.ablation_tables(config)  # report stem -> ablation name
FIG6B = wf.fig6b(config)


rule ablation_table:
    input:
        lambda w: wf.ablation_results(config, ABLATION_TABLES[w.table]),
    output:
        f"{REPORTS}{{table}}.md",
    log:
        "data/logs/report/{table}.log",
    benchmark:
        "data/benchmarks/report/{table}.tsv"
    conda:
        "../../envs/nndiff.yaml"
    wildcard_constraints:
        table="|".join(ABLATION_TABLES) or "(?!)",
    params:
        config=workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml",
        name=lambda w: ABLATION_TABLES[w.table],
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "nndiff ablation-report {input} --name {params.name} --config {params.config} --out {output} > {log} 2>&1"


if FIG6B:

    rule fig6b:
        input:
            wf.fig6b_results(config),
        output:
            md=f"{REPORTS}fig6b.md",
            csv=f"{REPORTS}figures/fig6b.csv",
            png=f"{REPORTS}figures/fig6b.png",
            svg=f"{REPORTS}figures/fig6b.svg",
        log:
            "data/logs/report/fig6b.log",
        benchmark:
            "data/benchmarks/report/fig6b.tsv"
        conda:
            "../../envs/nndiff.yaml"
        params:
            config=workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml",
        threads: 1
        resources:
            mem_mb=2000,
        shell:
            "nndiff figure fig6b {input} --config {params.config} --out {output.md} > {log} 2>&1"
