# Cond P-Diff's GLUE experiment (its Table 1): only where a Hugging Face model and the GLUE TSVs exist.
# Built on request: snakemake --cores 8 reports/glue.md --configfile <profile with a `glue:` section>


rule glue_zoo:
    output:
        "data/glue/zoo.pt",
    log:
        "data/logs/glue/zoo.log",
    benchmark:
        "data/benchmarks/glue/zoo.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        model=GLUE.get("model", ""),
        root=glue_root(),
        tasks=" ".join(GLUE.get("tasks", [])),
        lora=json.dumps(GLUE.get("lora", {})),
        train=json.dumps(GLUE.get("train", {})),
        device=DEVICE,
        seed=config["seed"],
    threads: THREADS
    resources:
        mem_mb=16000,
        gpu=GPU,
    shell:
        "nndiff glue-zoo --model {params.model} --root {params.root} --tasks {params.tasks} --lora '{params.lora}'"
        " --train '{params.train}' --seed {params.seed} --device {params.device} --threads {threads}"
        " --out {output} > {log} 2>&1"


rule glue_report:
    input:
        zoo="data/glue/zoo.pt",
    output:
        md=f"{REPORTS}glue.md",
        csv=f"{REPORTS}glue.csv",
    log:
        "data/logs/glue/report.log",
    benchmark:
        "data/benchmarks/glue/report.tsv"
    conda:
        "../../envs/nndiff.yaml"
    params:
        root=glue_root(),
        options=json.dumps(GLUE.get("method", {})),
        encoder=ENCODER,
        device=DEVICE,
        seed=config["seed"],
    threads: THREADS
    resources:
        mem_mb=16000,
        gpu=GPU,
    shell:
        "nndiff glue-run --zoo {input.zoo} --root {params.root} --options '{params.options}'"
        " --workdir data/glue/cond-pdiff --encoder '{params.encoder}' --encoder-cache data/cache/encoders"
        " --seed {params.seed} --device {params.device} --threads {threads} --out {output.md} > {log} 2>&1"
