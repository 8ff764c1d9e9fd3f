# The results page: every report of the profile (REPORT_TARGETS), any other *.md already in its folder
# (hand-made ones) and figures/* -> one self-contained index.html (benchmarks/site.py).
# Included last: it reads the Snakefile's REPORT_TARGETS.
from benchmarks.site import rule_inputs as site_inputs


rule site:
    input:
        reports=lambda w: site_inputs(REPORT_TARGETS, REPORTS)["reports"],
        figures=lambda w: site_inputs(REPORT_TARGETS, REPORTS)["figures"],
    output:
        f"{REPORTS}index.html",
    log:
        "data/logs/report/site.log",
    benchmark:
        "data/benchmarks/report/site.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        reports=lambda w, output: os.path.dirname(output[0]),
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "nndiff site {input.reports} --reports-dir {params.reports} --out {output} > {log} 2>&1"
