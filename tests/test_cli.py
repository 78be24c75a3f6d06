"""`dia-llama`: fast help, one naming scheme, and user mistakes answered by one line (exit code 2), never a
traceback. `MISTAKES` is the list of mistakes tried; the closing note of issue #18 prints what each says."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dia_llama.cli import COMMANDS, main
from dia_llama.volume_io import write_nifti

SRC = Path(__file__).resolve().parents[1] / "src"


def run_launcher(*args: str, code: str = "") -> subprocess.CompletedProcess:
    """The console script's launcher in a fresh interpreter (what `dia-llama …` runs)."""
    script = ("import sys, _dia_llama_cli\nsys.argv = ['dia-llama', *sys.argv[1:]]\ntry:\n    _dia_llama_cli.main()\n"
              f"except SystemExit:\n    pass\n{code}")
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                          cwd=SRC)


def test_help_and_version_answer_at_once_without_torch():
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        done = run_launcher("--help", code="print('torch' in sys.modules, 'transformers' in sys.modules)")
        best = min(best, time.perf_counter() - start)
    assert done.returncode == 0 and all(name in done.stdout for name in COMMANDS)
    assert done.stdout.strip().endswith("False False")  # neither torch nor transformers was imported
    assert best < 1.0, f"dia-llama --help took {best:.2f} s"
    version = run_launcher("--version")
    assert version.stdout.startswith("dia-llama ") and version.returncode == 0


def test_options_take_both_spellings(tmp_path, capsys):
    reports = tmp_path / "r.csv"
    reports.write_text("case,text\n1,No pleural effusion.\n")
    for spelling in ("--id-column", "--id_column"):
        assert main(["label", str(reports), "--column", "text", spelling, "case",
                     "--output", str(tmp_path / "o.csv")]) == 0
    assert (tmp_path / "o.csv").read_text().startswith("case,")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mistakes")
    (root / "empty.csv").write_text("")
    (root / "no_prediction.csv").write_text("id,reference\n1,x\n")
    (root / "pickled").mkdir()
    auto_map = {"AutoConfig": "configuration_dia_llama.DiaLlamaConfig"}
    (root / "pickled" / "config.json").write_text(json.dumps({"model_type": "dia_llama", "auto_map": auto_map}))
    (root / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04not a real pickle")
    (root / "llm_without_tokenizer").mkdir()
    write_nifti(root / "scan.nii.gz", np.zeros((8, 8, 4), np.int16))
    return root


# (arguments, what the one-line message must say); {root} is the files fixture's folder, {model} the tiny model
MISTAKES = [
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["evaluate"], "the following arguments are required: model, --data"),
    (["generate", "{model}", "x", "--dtype", "float8"], "argument --dtype: invalid choice"),
    (["generate", "{root}/no_model", "{root}/scan.nii.gz"], "no_model: no model folder of that name here"),
    (["generate", "{model}", "{root}/scan.nii.gz", "--load-in-4bit"], "needs a CUDA GPU"),
    (["generate", "{model}", "{root}/scan.nii.gz", "--load-in-4bit", "--load-in-8bit"], "choose one of --load-in-4bit"),
    (["init", "{root}/paper", "--preset", "paper"], "needs --llm PATH"),
    (["init", "{root}/x", "--llm", "{root}/missing_llm"], "not a folder"),
    (["init", "{root}/x", "--llm", "{root}/llm_without_tokenizer"], "no tokenizer"),
    (["init", "{root}/x", "--preset", "huge"], "invalid choice: 'huge'"),
    (["train", "tiny_gpu"], "no shipped recipe"),
    (["train", "tiny_cpu", "--output-dir", "{root}/run"], "--data is required"),
    (["train", "--preset", "tiny", "--data", "{root}/missing_data", "--output-dir", "{root}/run"], "missing_data"),
    (["preprocess", "{root}/missing_data", "--output-dir", "{root}/cache"], "one of the arguments --model --preset"),
    (["preprocess", "{root}/missing_data", "--output-dir", "{root}/cache", "--preset", "tiny"], "missing_data"),
    (["score", "{root}/empty.csv"], "the file is empty"),
    (["score", "{root}/no_prediction.csv"], "no prediction column 'prediction'"),
    (["score", "{root}/missing.csv"], "missing.csv: no such file"),
    (["label", "{root}/no_prediction.csv", "--labeler", "regex"], "invalid choice: 'regex'"),
    (["label", "{root}/no_prediction.csv", "--labeler", "chexbert"], "chexbert"),
    (["convert-official", "{root}/missing.bin", "{root}/out", "--llm", "{root}/llm_without_tokenizer"],
     "no tokenizer"),
    (["convert-official", "{root}/missing.bin", "{root}/out"], "does not ship a tokenizer"),
    (["push", "{root}/pickled", "me/model", "--dry-run", "{root}/staged"], "pickle"),
    (["push", "{root}/missing_model", "me/model", "--dry-run", "{root}/staged"], "missing_model"),
    (["evaluate", "{model}", "--data", "{root}/missing_data"], "missing_data"),
    (["demo", "--volume-size", "64", "64"], "expected 3 arguments"),
    (["synth", "{root}/synth", "--num-cases", "many"], "invalid int value: 'many'"),
]


@pytest.mark.parametrize("argv, says", MISTAKES, ids=[" ".join(m[0][:2]) for m in MISTAKES])
def test_a_user_mistake_is_one_line_with_exit_code_2(argv, says, files, tiny_model_dir, capsys):
    argv = [a.format(root=files, model=tiny_model_dir) for a in argv]
    with pytest.raises(SystemExit) if _is_usage_error(says) else _no_exit() as exited:
        code = main(argv)
    code = exited.value.code if exited is not None else code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err and err[-1].startswith("dia-llama: error: ") and says in err[-1], err
    assert "Traceback" not in "\n".join(err)
    progress_free = [line for line in err if not line.startswith(("Loading", "Writing", "generating"))]
    assert len(progress_free) == 1, err


def test_debug_shows_the_traceback(files):
    with pytest.raises(ValueError, match="the file is empty"):
        main(["score", str(files / "empty.csv"), "--debug"])


def _is_usage_error(says: str) -> bool:
    usage = ("invalid choice", "the following arguments are required", "one of the arguments", "expected 3 arguments",
             "invalid int value")
    return any(s in says for s in usage)


class _no_exit:
    value = None

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_generate_good_and_bad_scan(tiny_model_dir, files, tmp_path, capsys):
    """One good and one bad scan: the good record, an error record naming the problem, no traceback, exit code 1."""
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    code = main(["generate", str(tiny_model_dir), str(files / "scan.nii.gz"), str(bad), "--json",
                 "--max-new-tokens", "2", "--no-progress"])
    out, err = capsys.readouterr()
    records = {r["scan"]: r for r in (json.loads(line) for line in out.splitlines() if line.startswith("{"))}
    assert code == 1 and len(records) == 2 and "Traceback" not in out + err
    good, failed = records[str(files / "scan.nii.gz")], records[str(bad)]
    assert good["scan"] == str(files / "scan.nii.gz") and "report" in good and len(good["diagnoses"]) == 14
    assert failed["scan"] == str(bad) and "broken.nii.gz" in failed["error"] and "report" not in failed
    assert "1 reports, 1 failed" in err


def test_generate_expands_folders_globs_and_manifests_and_resumes(tiny_model_dir, tmp_path, capsys):
    import jsonschema

    from dia_llama.inference import RECORD_SCHEMA

    scans = tmp_path / "scans"
    for name in ("a", "b", "c"):
        write_nifti(scans / f"{name}.nii.gz", np.full((8, 8, 4), -500, np.int16))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,volume\nfirst,scans/a.nii.gz\nmissing,scans/zzz.nii.gz\n")
    output = tmp_path / "out" / "reports.jsonl"
    argv = ["generate", str(tiny_model_dir), str(scans), str(tmp_path / "scans" / "?.nii.gz"), str(manifest),
            str(tmp_path / "nothing_*.nii.gz"), "--output", str(output), "--max-new-tokens", "2", "--no-progress"]
    assert main(argv) == 1  # the manifest's missing scan and the empty glob fail; the rest are reported
    records = [json.loads(line) for line in output.read_text().splitlines()]
    for record in records:
        jsonschema.validate(record, RECORD_SCHEMA)
    by_scan = {r["scan"]: r for r in records}
    assert {str(scans / f"{n}.nii.gz") for n in "abc"} <= set(by_scan)  # the folder (the glob repeats it)
    assert "report" in by_scan["first"] and "no such file" in by_scan["missing"]["error"]
    assert "no files match" in by_scan[str(tmp_path / "nothing_*.nii.gz")]["error"]
    # resume: an interrupted write leaves half a line; the next run drops it and skips what is done
    with output.open("a") as f:
        f.write('{"scan": "half')
    capsys.readouterr()
    assert main(argv + ["--json"]) == 0
    assert "0 reports, 0 failed, 6 already in the output" in capsys.readouterr().err
    assert len(output.read_text().splitlines()) == len(records)


def test_a_model_larger_than_free_memory_is_refused_before_loading(tiny_model_dir, files, tmp_path, monkeypatch,
                                                                   capsys):
    """Building or loading what cannot fit says so first, instead of being killed for memory."""
    from dia_llama.presets import building

    monkeypatch.setattr(building, "available_memory", lambda: 64 * 2**10)
    assert main(["generate", str(tiny_model_dir), str(files / "scan.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "of memory, but only 64.0 KiB are free" in err
    assert main(["init", str(tmp_path / "new"), "--preset", "tiny"]) == 2
    assert "the tiny model needs about" in capsys.readouterr().err and not (tmp_path / "new").exists()
