"""The smoke DAG through Snakemake's slurm executor on a one-node SLURM made of this host
(scripts/slurm-one-node.sh, profiles/slurm). Skips, saying why, without root, Debian's slurm-wlm
(`apt-get install slurm-wlm`) or the plugin (`pip install -e ".[cluster]"`), or when the cluster cannot start.

The zoo (6 jobs, ~3 minutes on 2 busy cores) runs by default; the whole of reports/smoke/table1.md (93 jobs)
only with NNDIFF_CLUSTER_TABLE1=1."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SCRIPT = ROOT / "scripts" / "slurm-one-node.sh"
SMOKE = ROOT / "benchmarks" / "configs" / "smoke.yaml"
CONF = Path("/etc/slurm/slurm.conf")
MARK = "# written by nndiff-bench scripts/slurm-one-node.sh"
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _missing() -> str | None:
    absent = [b for b in ("sbatch", "squeue", "scontrol", "slurmctld", "slurmd", "munged") if not shutil.which(b, path=SBIN)]
    if absent:
        return f"SLURM is not installed ({', '.join(absent)} not found): apt-get install slurm-wlm"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return 'snakemake-executor-plugin-slurm is not installed: pip install -e ".[cluster]"'
    if os.geteuid() != 0:
        return "starting munged, slurmctld and slurmd as scripts/slurm-one-node.sh does needs root"
    return None


def _script(cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), cmd], capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, PATH=SBIN))


@pytest.fixture(scope="module")
def cluster():
    """The one-node cluster: started here (and stopped at the end) unless the script's cluster already runs."""
    why = _missing()
    if why:
        pytest.skip(why)
    if CONF.exists() and MARK not in CONF.read_text():
        pytest.skip(f"{CONF} belongs to a SLURM not made by scripts/slurm-one-node.sh: not testing on it")
    already = _script("status").returncode == 0
    if not already:
        out = _script("start")
        if out.returncode != 0:
            _script("stop")
            pytest.skip(f"the one-node SLURM did not start:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    yield
    if not already:
        _script("stop")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slurm-smoke")


def _snakemake_slurm(workdir: Path, target: str) -> str:
    cmd = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--profile", str(ROOT / "profiles" / "slurm"), target, "--configfile", str(SMOKE)]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{SBIN}", HF_HUB_OFFLINE="1")  # sbatch --export=ALL: nndiff on PATH
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{log[-5000:]}"
    return log


def _through_slurm(log: str, workdir: Path) -> set[str]:
    """The SLURM job ids of this run, checked against slurmctld's own record of finished jobs."""
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", log)
    assert submitted, log[-3000:]
    for _, slurm_log in submitted:  # the plugin's per-job logs (profiles/slurm keeps successful ones)
        assert Path(slurm_log).is_file() and str(workdir / ".snakemake" / "slurm_logs") in slurm_log
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                            env=dict(os.environ, PATH=SBIN)).stdout
    jobcomp = Path(re.search(r"^JobCompLoc\s*=\s*(\S+)", config, re.M).group(1)).read_text()
    done = {m.group(1) for m in re.finditer(rf"JobId=(\d+) .*Name={re.escape(run_id)} JobState=COMPLETED", jobcomp)}
    ids = {jobid for jobid, _ in submitted}
    assert ids <= done, f"jobs {sorted(ids - done)} not COMPLETED in slurmctld's {jobcomp[-2000:]}"
    return ids


def test_the_zoo_is_built_by_slurm_jobs(cluster, workdir):
    log = _snakemake_slurm(workdir, "data/synthetic/cnn-5k/finetuned/zoo.pt")
    ids = _through_slurm(log, workdir)
    assert len(ids) == 6  # prepare, tasks, stage1, 2 finetune shards, merge_shards: one SLURM job each
    assert (workdir / "data/synthetic/cnn-5k/finetuned/zoo.pt").stat().st_size > 0
    rules = {p.name for p in (workdir / ".snakemake" / "slurm_logs").iterdir()}
    assert rules == {f"rule_{r}" for r in ("prepare", "tasks", "stage1", "finetune", "merge_shards")}


@pytest.mark.skipif(os.environ.get("NNDIFF_CLUSTER_TABLE1") != "1",
                    reason="the whole smoke table through SLURM (93 jobs) runs only with NNDIFF_CLUSTER_TABLE1=1")
def test_the_smoke_table_is_built_by_slurm_jobs(cluster, workdir):
    log = _snakemake_slurm(workdir, "reports/smoke/table1.md")
    _through_slurm(log, workdir)
    table = (workdir / "reports/smoke/table1.md").read_text()
    assert "tina" in table and "classifier-selection" in table
