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


rule zoo_report:
    input:
        generic=[f"data/{d}/{get_arch(a).base}/generic.pt" for d in DATASETS for a in ARCHS],
        zoo=expand("data/{dataset}/{arch}/finetuned/zoo.pt", dataset=DATASETS, arch=ARCHS),
        accuracy=expand("data/{dataset}/{arch}/results/oracle/zoo.csv", dataset=DATASETS, arch=ARCHS),
    output:
        "reports/zoo.md",
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
