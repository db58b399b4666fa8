"""The GPU suite, rehearsed on CPU (benchmarks/gpu_suite.sh --rehearse; issue 24): every default-tier step runs at
toy sizes and writes results whose schema is checked; a step that overruns its limit is killed and the later steps
still run; a deadline skips what would not finish and says so; the default tiers fit the device budget."""
import json
import re
import subprocess
import tarfile
from pathlib import Path

from dip_kernels.preferences import load_preferences

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"
DEFAULT_STEPS = ["install", "smoke", "kernels", "ops", "head", "preferences", "train_step", "sampling",
                 "check_results"]


def rehearse(out: Path, *extra) -> tuple[int, list]:
    done = subprocess.run(["bash", str(SUITE), "--rehearse", "--out", str(out), *extra], capture_output=True,
                          text=True, timeout=900, cwd=ROOT)
    return done.returncode, (out / "summary.txt").read_text().splitlines()


def test_the_rehearsal_runs_every_default_step(tmp_path):
    rc, summary = rehearse(tmp_path)
    steps = {line.split()[0]: line for line in summary}
    assert rc == 0, summary
    assert [line.split()[0] for line in summary] == DEFAULT_STEPS[:2] + ["overrun_probe"] + DEFAULT_STEPS[2:]
    assert all(" rc=0 " in steps[name] for name in DEFAULT_STEPS), summary
    assert " rc=124 " in steps["overrun_probe"]  # killed at its limit; everything after it ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["environment.txt", "preferences.json", "results.tar.gz",
                                                          "summary.txt"]  # ≤ 8 files come back
    with tarfile.open(tmp_path / "results.tar.gz") as archive:
        names = {Path(n).name for n in archive.getnames()}
    assert {"smoke.json", "bench_ops.json", "bench_detailer.json", "bench_model_train.json", "kernels_junit.xml",
            "bench_model_sample.json", "preferences.json", "check_results.log", "environment.txt"} <= names
    assert load_preferences(tmp_path / "preferences.json")["sm_90"]  # what auto loads on that architecture
    assert json.loads((tmp_path / "preferences.json").read_text())["sm_90"]["sources"] == ["bench_ops.json",
                                                                                          "bench_detailer.json"]


def test_a_deadline_skips_what_would_not_finish(tmp_path):
    rc, summary = rehearse(tmp_path, "--deadline", "15")
    skipped = [line.split()[0] for line in summary if "skipped (deadline" in line]
    assert rc != 0 and "check_results" in skipped and len(skipped) >= 3, summary
    assert summary[0].startswith("install rc=")  # what fits still runs
    assert (tmp_path / "results.tar.gz").is_file()


def test_the_default_tier_fits_the_device_budget():
    script = SUITE.read_text()
    default = script.split('if [ "$TIER" = default ]; then', 1)[1].split("\nelse\n", 1)[0]
    limits = {m.group(1): int(m.group(2)) for m in re.finditer(r"step (\w+) (\d+) ", default)}
    limits["check_results"] = int(re.search(r"step check_results (\d+) ", script).group(1))
    assert set(limits) - {"overrun_probe"} == set(DEFAULT_STEPS)
    assert sum(v for k, v in limits.items() if k not in ("install", "overrun_probe")) <= 480
    assert int(re.search(r"DEADLINE=(\d+)", script).group(1)) <= 540  # one 600-s run with room to start
