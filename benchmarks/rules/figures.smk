# Figures drawn from what the DAG already makes (config `report.figures`, benchmarks/paper_figures.py):
# - training-curve: Tina's training loss vs step, read from the states of fits the config makes anyway;
# - samplers: p-Acc vs sampling steps and seconds per p-Model of Tina's sampler variants (generate + evaluate only);
# - fig6c: Table 7's names -> names and names -> descriptions rows as the paper's Fig. 6c.
# Each writes <reports>/<name>.md and <reports>/figures/<name>.{png,svg,csv}; no rule here fits anything new.
PAPER_FIGURES = wf.figures(config)
FIGURE_REPORTS = wf.figure_reports(config, REPORTS)
FIGURE_CONFIG = workflow.configfiles[-1] if workflow.configfiles else "benchmarks/configs/cpu.yaml"


if "training-curve" in PAPER_FIGURES:

    rule training_curve:
        input:
            fits=wf.training_curve_fits(config),  # each fit's state/state.pt beside it holds its loss history
        output:
            **figure_outputs("training-curve"),
        log:
            "data/logs/report/training-curve.log",
        benchmark:
            "data/benchmarks/report/training-curve.tsv"
        conda:
            "../../envs/nndiff.yaml"
        params:
            config=FIGURE_CONFIG,
        threads: 1
        resources:
            mem_mb=4000,
        shell:
            "nndiff figure training-curve {input.fits} --config {params.config} --out {output.md} > {log} 2>&1"


if "samplers" in PAPER_FIGURES:

    rule samplers_figure:
        input:
            results=wf.samplers_results(config),
            generated=wf.samplers_generated(config),  # their .timing.json sidecars time each sampler
        output:
            **figure_outputs("samplers"),
        log:
            "data/logs/report/samplers.log",
        benchmark:
            "data/benchmarks/report/samplers.tsv"
        conda:
            "../../envs/nndiff.yaml"
        params:
            config=FIGURE_CONFIG,
        threads: 1
        resources:
            mem_mb=2000,
        shell:
            "nndiff figure samplers {input.results} --config {params.config} --out {output.md} > {log} 2>&1"


if "fig6c" in PAPER_FIGURES:

    rule fig6c:
        input:
            results=wf.fig6c_results(config),
        output:
            **figure_outputs("fig6c"),
        log:
            "data/logs/report/fig6c.log",
        benchmark:
            "data/benchmarks/report/fig6c.tsv"
        conda:
            "../../envs/nndiff.yaml"
        params:
            config=FIGURE_CONFIG,
        threads: 1
        resources:
            mem_mb=2000,
        shell:
            "nndiff figure fig6c {input.results} --config {params.config} --out {output.md} > {log} 2>&1"
