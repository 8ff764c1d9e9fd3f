# Table 3 (Tina A.3): zero-shot transfer to unseen classes, with an `unseen:` config section.
# The methods of `unseen.methods` are refitted as `<label>~unseen` on data/<d>/<a>/finetuned/unseen-zoo.pt (p-Models
# of the `unseen-zoo` split: tasks of class half A only; the fit/generate rules read it through `method_zoo`), then
# they and `unseen.references` (zoo-free labels: generic, classifier selection, oracle) are evaluated on every
# `unseen-<p>` split (p% of each task's classes from half B) -> reports/table3.md and figures/table3.{png,svg,csv}
# (benchmarks/unseen.py). Stage 1 (the generic model) is trained on every class: half B is unseen by the generators.
UNSEEN_REPORTS = [f"{REPORTS}table3.md", *(f"{REPORTS}figures/table3.{ext}" for ext in ("png", "svg", "csv"))]


rule table3:
    input:
        wf.unseen_results(config),
    output:
        md=f"{REPORTS}table3.md",
        csv=f"{REPORTS}figures/table3.csv",
        png=f"{REPORTS}figures/table3.png",
        svg=f"{REPORTS}figures/table3.svg",
    log:
        "data/logs/report/table3.log",
    benchmark:
        "data/benchmarks/report/table3.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        config=workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "nndiff figure table3 {input} --config {params.config} --out {output.md} > {log} 2>&1"
