# CLIP experiments (config `clip:`, benchmarks/clip_experiments.py):
# - Table 2: the frozen CLIP ViT-B/32 image tower with a generated linear head (arch vit-b32-head; its features,
#   zoo and methods through the usual rules) -> reports/table2.md;
# - Fig. 6a: Tina trained on class names, prompted at generate time with CLIP image embeddings of seeded train
#   exemplars of each class (variants with `generate_prompt: image`) -> reports/fig6a.md and its figure.
# Every job's CLIP (image features, text and image prompts) reads `clip.weights` / `clip.model` through the
# environment (benchmarks.encoders.clip_defaults), set here from the config; to rerun a job by hand, export
# NNDIFF_CLIP_WEIGHTS and NNDIFF_CLIP_MODEL alike. The reports' jobs check the weights before anything runs.
os.environ.update(wf.clip_env(config))
CLIP_REPORTS = wf.clip_reports(config, REPORTS)


rule clip_table2:
    input:
        lambda w: wf.clip_report_inputs(config, "table2"),  # the weights first: one line naming the file
    output:
        md=f"{REPORTS}table2.md",
        csv=f"{REPORTS}figures/table2.csv",
    log:
        "data/logs/report/table2.log",
    benchmark:
        "data/benchmarks/report/table2.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        config=workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "nndiff figure table2 {input} --config {params.config} --out {output.md} > {log} 2>&1"


rule clip_fig6a:
    input:
        lambda w: wf.clip_report_inputs(config, "fig6a"),  # the weights first: one line naming the file
    output:
        md=f"{REPORTS}fig6a.md",
        csv=f"{REPORTS}figures/fig6a.csv",
        png=f"{REPORTS}figures/fig6a.png",
        svg=f"{REPORTS}figures/fig6a.svg",
    log:
        "data/logs/report/fig6a.log",
    benchmark:
        "data/benchmarks/report/fig6a.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        config=workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "nndiff figure fig6a {input} --config {params.config} --out {output.md} > {log} 2>&1"
