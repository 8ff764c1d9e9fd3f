"""nndiff budget: a dry run's jobs priced by the seconds their benchmark files recorded."""
import pytest

from benchmarks.budget import budget_lines, measured_seconds, parse_dry_run, price, summarize

DRY_RUN = """Building DAG of jobs...
Job stats:
job      count
fit          2

[Wed Dec  2 00:31:12 2026]
rule fit:
    input: data/caltech101/cnn-5k/generic.pt
    output: data/caltech101/cnn-5k/methods/tina/fit.json, data/caltech101/cnn-5k/methods/tina/state.pt
    log: data/logs/fit/caltech101-cnn-5k-tina.log
    jobid: 3
    benchmark: {bench}/fit-a.tsv
    reason: Missing output files

[Wed Dec  2 00:31:12 2026]
rule fit:
    output: data/caltech101/cnn-5k/methods/taper/fit.json
    benchmark: {bench}/fit-b.tsv

[Wed Dec  2 00:31:12 2026]
rule fit:
    output: data/miniimagenet/cnn-5k/methods/tina/fit.json
    benchmark: {bench}/fit-c.tsv

[Wed Dec  2 00:31:12 2026]
rule fit:
    output: data/caltech101/cnn-5k/methods/hypernet/fit.json
    benchmark: {bench}/fit-d.tsv

[Wed Dec  2 00:31:12 2026]
localrule all:
    input: reports/table1.md
    jobid: 0
"""


def _tsv(path, seconds):
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:00\t10\n")


def test_parse_dry_run_reads_each_rule_block(tmp_path):
    jobs = parse_dry_run(DRY_RUN.format(bench=tmp_path))
    assert [j.rule for j in jobs] == ["fit", "fit", "fit", "fit", "all"]
    assert jobs[0].output == "data/caltech101/cnn-5k/methods/tina/fit.json"  # the first of two outputs
    assert jobs[0].benchmark == f"{tmp_path}/fit-a.tsv"
    assert jobs[-1].benchmark is None


def test_price_measures_then_estimates_from_the_same_dataset(tmp_path):
    _tsv(tmp_path / "fit-a.tsv", 100.0)   # caltech
    _tsv(tmp_path / "fit-b.tsv", 300.0)   # caltech
    _tsv(tmp_path / "fit-c.tsv", 5000.0)  # miniimagenet
    priced = price(parse_dry_run(DRY_RUN.format(bench=tmp_path)))
    by_output = priced.set_index("output")
    hypernet = by_output.loc["data/caltech101/cnn-5k/methods/hypernet/fit.json"]
    assert hypernet["source"] == "estimated"
    assert hypernet["seconds"] == pytest.approx(200.0)  # Caltech's median, not the Mini-ImageNet fit's 5000 s
    assert by_output.loc["", "source"] == "unknown"  # rule `all` has no output and never ran: not priced
    table = summarize(priced).set_index("rule")
    assert table.loc["fit", "jobs"] == 4 and table.loc["fit", "measured"] == 3
    assert table.loc["fit", "core-hours"] == pytest.approx(5600 / 3600)
    head = budget_lines(priced, targets=["all"], cores=2, remaining=False)
    assert "1.56 core-hours" in head[0] and "1 jobs of rules never run here" in head[0]
    assert "at least 1.39 h" in head[1]  # the longest job (5000 s) outlasts the sum over 2 cores (0.78 h)


def test_a_broken_benchmark_file_prices_like_a_job_never_run(tmp_path):
    (tmp_path / "half.tsv").write_text("s\th:m:s\n")
    (tmp_path / "foreign.tsv").write_text("seconds\n12\n")
    assert measured_seconds(str(tmp_path / "half.tsv")) is None
    assert measured_seconds(str(tmp_path / "foreign.tsv")) is None
    assert measured_seconds(str(tmp_path / "missing.tsv")) is None
    assert measured_seconds(None) is None


def test_an_unmeasured_job_is_priced_like_the_same_label_first(tmp_path):
    _tsv(tmp_path / "fit-a.tsv", 100.0)   # tina, caltech cnn-5k
    _tsv(tmp_path / "fit-b.tsv", 300.0)   # taper, caltech cnn-5k
    _tsv(tmp_path / "fit-c.tsv", 5000.0)  # tina, miniimagenet
    text = DRY_RUN.format(bench=tmp_path) + """
rule generate:
    output: data/caltech101/cnn-5k/methods/tina@ddim-10/generated/ood.pt
    benchmark: {bench}/gen.tsv

rule fit:
    output: data/caltech101/resnet20-head/methods/tina/fit.json
    benchmark: {bench}/fit-e.tsv
""".format(bench=tmp_path)
    by_output = price(parse_dry_run(text)).set_index("output")
    assert by_output.loc["data/caltech101/resnet20-head/methods/tina/fit.json", "seconds"] == pytest.approx(2550.0)
    assert by_output.loc["data/caltech101/cnn-5k/methods/tina@ddim-10/generated/ood.pt", "source"] == "unknown"


def test_jobs_left_to_run_are_priced_from_the_whole_plan(tmp_path):
    _tsv(tmp_path / "fit-a.tsv", 100.0)
    _tsv(tmp_path / "fit-b.tsv", 300.0)
    everything = parse_dry_run(DRY_RUN.format(bench=tmp_path))
    left = [j for j in everything if "hypernet" in j.output]
    alone, priced = price(left), price(left, everything)
    assert alone["source"].tolist() == ["unknown"]  # nothing measured among the jobs left
    assert priced["source"].tolist() == ["estimated"] and priced["seconds"].tolist() == [200.0]


def test_a_refit_under_another_label_is_priced_like_its_method(tmp_path):
    _tsv(tmp_path / "fit-a.tsv", 100.0)   # tina, caltech cnn-5k
    _tsv(tmp_path / "fit-b.tsv", 300.0)   # taper, caltech cnn-5k
    _tsv(tmp_path / "fit-c.tsv", 5000.0)  # tina, miniimagenet
    text = DRY_RUN.format(bench=tmp_path) + f"""
rule fit:
    output: data/caltech101/cnn-14k/methods/tina-14k/fit.json
    benchmark: {tmp_path}/fit-e.tsv

rule fit:
    output: data/caltech101/cnn-5k/methods/tina-w64/fit.json
    benchmark: {tmp_path}/fit-f.tsv
"""
    jobs = parse_dry_run(text)
    method_of = {"tina-14k": "tina", "tina-w64": "tina", "tina": "tina", "taper": "taper"}
    by_output = price(jobs, method_of=method_of).set_index("output")
    assert by_output.loc["data/caltech101/cnn-14k/methods/tina-14k/fit.json", "seconds"] == pytest.approx(2550.0)
    assert by_output.loc["data/caltech101/cnn-5k/methods/tina-w64/fit.json", "seconds"] == pytest.approx(100.0)
    # without the mapping the same jobs fall back to the rule's place or the rule: taper's fits count too
    blind = price(jobs).set_index("output")
    assert blind.loc["data/caltech101/cnn-5k/methods/tina-w64/fit.json", "seconds"] == pytest.approx(200.0)


def test_the_cpu_profile_maps_its_ablation_rows_to_their_method():
    from benchmarks.budget import methods_of_labels
    method_of = methods_of_labels("cpu")
    assert method_of["tina-14k"] == "tina" and method_of["cpd-zoo50"] == "cond-pdiff"
    assert method_of["classifier-selection-slice"] == "classifier-selection"
