# Publishing: a profile's reports copied to its committed folder (config `publish`, cpu: reports/published/),
# by rule all or an explicit target such as `reports/published/table1.md`.
if PUBLISH:

    rule publish:
        input:
            f"{REPORTS}{{file}}",
        output:
            f"{PUBLISH}{{file}}",
        log:
            "data/logs/publish/{file}.log",
        benchmark:
            "data/benchmarks/publish/{file}.tsv"
        conda:
            "../../envs/nndiff.yaml"
        wildcard_constraints:
            file=r"[^/]+\.(md|csv|html)|figures/[^/]+\.(png|svg|csv)",
        threads: 1
        resources:
            mem_mb=500,
        shell:
            "nndiff publish {input} {output} > {log} 2>&1"
