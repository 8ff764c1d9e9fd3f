rule table1:
    input:
        results(),
    output:
        md="reports/table1.md",
        csv="reports/table1.csv",
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
