# The claims ledger (benchmarks/claims.py): every testable claim of the two papers with a verdict.


rule claims:
    input:
        results=claims_results,
        efficiency=[f"{REPORTS}efficiency-{d}-{a}.md" for d, a in PLACES] if EFFICIENCY else [],
        headroom=f"{REPORTS}headroom.csv" if HEADROOM else [],
    output:
        md=f"{REPORTS}claims.md",
        csv=f"{REPORTS}claims.csv",
    log:
        "data/logs/report/claims.log",
    benchmark:
        "data/benchmarks/report/claims.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        efficiency=lambda w, input: f"--efficiency {' '.join(input.efficiency)}" if input.efficiency else "",
        headroom=lambda w, input: f"--headroom {input.headroom}" if input.headroom else "",
        config=workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "nndiff claims {input.results} {params.efficiency} {params.headroom} --config {params.config}"
        " --out {output.md} > {log} 2>&1"
