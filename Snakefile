# nndiff-bench: datasets -> tasks -> generic models -> p-Model zoos -> methods -> per-task accuracies -> reports.
# Run: snakemake --cores 8 reports/table1.md            (profile cpu; `snakemake --cores 8` also publishes)
#      snakemake --cores 2 reports/smoke/table1.md --configfile benchmarks/configs/smoke.yaml


# The cpu profile unless another config file is given: Snakemake would merge a default with --configfile.
if not config:

    configfile: "benchmarks/configs/cpu.yaml"


include: "benchmarks/rules/common.smk"
include: "benchmarks/rules/data.smk"
include: "benchmarks/rules/zoo.smk"
include: "benchmarks/rules/methods.smk"
include: "benchmarks/rules/report.smk"
include: "benchmarks/rules/paper.smk"
include: "benchmarks/rules/scaling.smk"
include: "benchmarks/rules/figures.smk"
include: "benchmarks/rules/novelty.smk"
include: "benchmarks/rules/memorization.smk"
include: "benchmarks/rules/headroom.smk"
include: "benchmarks/rules/claims.smk"
include: "benchmarks/rules/clip.smk"
include: "benchmarks/rules/publish.smk"


if "glue" in config:

    include: "benchmarks/rules/glue.smk"


if "unseen" in config:

    include: "benchmarks/rules/unseen.smk"  # Table 3: unseen classes


# Every report of the profile, written under its own folder (REPORTS: cpu reports/, others reports/<profile>/)
# so that profiles never clobber each other; a profile with `publish:` (cpu: reports/published/) copies them to
# that committed folder.
REPORT_TARGETS = [
    f"{REPORTS}table1.md",
    f"{REPORTS}claims.md",
    *([f"{REPORTS}headroom.md", f"{REPORTS}figures/headroom.png"] if HEADROOM else []),
    f"{REPORTS}zoo.md",
    f"{REPORTS}variants.md",
    *[f"{REPORTS}efficiency-{d}-{a}.md" for d, a in PLACES],
    *[f"{REPORTS}{wf.ablation_report(config, name)}.md" for name in ABLATIONS],  # tables 6, 7: `report:`
    *([f"{REPORTS}fig6b.md", *(f"{REPORTS}figures/fig6b.{ext}" for ext in ("png", "svg", "csv"))] if FIG6B else []),
    *SCALING_TARGETS,  # Tina Fig. 4a, 4b, 5 where the config asks for them (`report.fig4a` ...)
    *FIGURE_REPORTS,  # `report.figures`: training-curve, samplers, fig6c (benchmarks/rules/figures.smk)
    *[
        diagnosis
        for m in ("tina", "cond-pdiff")
        if m in METHODS and "classifier-selection-slice" in METHODS
        for diagnosis in diagnostics(m)
    ],
    *[
        f"{REPORTS}autoencoder-cond-pdiff-{d}-{a}.md"
        for d, a in PLACES
        if "cond-pdiff" in METHODS and runs_on("cond-pdiff", a)
    ],
    *TABLE5_REPORTS,  # Tina Table 5 (memorization), with `report.table5`
    *(UNSEEN_REPORTS if "unseen" in config else []),  # table3.md and its figure
    *CLIP_REPORTS,  # `clip:` Table 2 (ViT-B/32 head) and Fig. 6a (image prompts), benchmarks/rules/clip.smk
    *NOVELTY_REPORTS,  # the generators (tina, cond-pdiff, hypernet) present in the config, with their figures
    *[r.replace(f"{REPORTS}novelty-", f"{REPORTS}figures/novelty-")[: -len(".md")] + ext for r in NOVELTY_REPORTS for ext in (".png", ".svg")],
]


rule all:
    input:
        REPORT_TARGETS,
        f"{REPORTS}index.html",
        published([*REPORT_TARGETS, f"{REPORTS}index.html"]) if PUBLISH else [],


# Last: the results page reads rule all's reports.
include: "benchmarks/rules/site.smk"
