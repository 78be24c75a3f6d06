"""`dia-llama`: one command, one subcommand per job, each a thin layer over a Python function.

This module imports only the standard library at load time: argument definitions live here and every subcommand
imports its implementation when it runs, so `dia-llama --help` and `--version` answer at once (the console script
loads this file without the package's `__init__`, which imports torch and transformers).

Conventions: options are spelled in kebab case (`--output-dir`); the underscore spelling (`--output_dir`) is accepted
everywhere. A folder output is `--output-dir`, a file output `--output`. A user error prints one line
`dia-llama: error: …` and exits with 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

PROG = "dia-llama"
USER_ERRORS = (ValueError, OSError, ImportError, KeyError, LookupError)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    define: Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int | None]]
    passthrough: bool = False  # the implementation parses its own arguments (train)


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, passthrough: bool = False):
    """Register a subcommand: the decorated function adds its arguments to a parser and returns its runner."""
    def register(define):
        COMMANDS[name] = Command(name, help, define, passthrough)
        return define
    return register


def _module(name: str):
    return importlib.import_module(f"dia_llama.{name}")


def _loading_arguments(p: argparse.ArgumentParser) -> None:
    """How `generate` and `evaluate` load a model."""
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (ignored with --device-map)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "auto"])
    p.add_argument("--device-map", default=None, help='"auto": spread the model over the GPUs / CPU (accelerate)')
    p.add_argument("--load-in-4bit", action="store_true", help="4-bit language model (bitsandbytes, CUDA)")
    p.add_argument("--load-in-8bit", action="store_true", help="8-bit language model (bitsandbytes, CUDA)")
    p.add_argument("--trust-remote-code", action="store_true", help="use the model folder's own code")


def _loading_kwargs(args) -> dict:
    return dict(revision=args.revision, device=args.device, dtype=args.dtype, device_map=args.device_map,
                trust_remote_code=args.trust_remote_code, load_in_4bit=args.load_in_4bit,
                load_in_8bit=args.load_in_8bit)


def _labeler_arguments(p: argparse.ArgumentParser, allow_none: bool) -> None:
    choices = ["rule", "chexbert", "ctrate-radbert"] + (["none"] if allow_none else [])
    p.add_argument("--labeler", default="rule", choices=choices,
                   help="report labeler for the clinical-efficacy labels (default: rule, offline)")
    p.add_argument("--disease-set", default=None, choices=["chexpert14", "ctrate18"],
                   help="label set of the rule labeler (default chexpert14)")
    p.add_argument("--labeler-weights", default=None,
                   help="chexbert: path to chexbert.pth (vocab.txt beside it); ctrate-radbert: model folder")


# ---------------------------------------------------------------------------------------------------------------------
# Subcommands


@command("init", "write an untrained model + processor folder")
def init_command(p):
    p.add_argument("output_dir", metavar="OUTPUT_DIR")
    p.add_argument("--preset", choices=["tiny", "paper"], default="tiny")
    p.add_argument("--llm", default=None, help="local causal-LM folder (weights + tokenizer) for the text part")
    p.add_argument("--disease-set", default="chexpert14", choices=["chexpert14", "ctrate18"])
    p.add_argument("--seed", type=int, default=0)

    def run(args):
        out = _module("presets").init_model_dir(args.output_dir, preset=args.preset, llm=args.llm,
                                                disease_names=args.disease_set, seed=args.seed)
        print(f"wrote an untrained {args.preset} Dia-LLaMA to {out}")
    return run


@command("synth", "write the synthetic chest-CT benchmark (NIfTI + manifest)")
def synth_command(p):
    p.add_argument("output_dir", metavar="OUTPUT_DIR")
    p.add_argument("--num-cases", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--disease-set", default="chexpert14", choices=["chexpert14", "ctrate18"])
    p.add_argument("--volume-size", type=int, nargs=3, default=(128, 128, 64), metavar=("H", "W", "D"))
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--prevalence", default=None, help='JSON {disease: prevalence} overriding the defaults')
    p.add_argument("--rare-prevalence", type=float, default=None,
                   help="set every rare class (< 5 %% by default) to this prevalence")

    def run(args):
        import json

        synthetic = _module("data.synthetic")
        prevalence = json.loads(args.prevalence) if args.prevalence else None
        if args.rare_prevalence is not None:
            prevalence = dict(synthetic.DEFAULT_PREVALENCE[args.disease_set], **(prevalence or {}))
            prevalence = {k: (args.rare_prevalence if v < 0.05 else v) for k, v in prevalence.items()}
        manifest = synthetic.synthesize_benchmark(
            args.output_dir, num_cases=args.num_cases, seed=args.seed, disease_set=args.disease_set,
            volume_size=tuple(args.volume_size), prevalence=prevalence, num_workers=args.num_workers, progress=True)
        print(f"wrote {args.num_cases} cases: {manifest}")
    return run


@command("preprocess", "cache processed volumes for training (resumable)")
def preprocess_command(p):
    p.add_argument("data", help="data set: a manifest (.jsonl/.csv or its folder), CTRG-Chest or CT-RATE folder")
    p.add_argument("--output-dir", "--output", "-o", dest="output_dir", required=True,
                   help="cache folder (one subfolder per processor config)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model folder or Hub id whose volume processor to use")
    source.add_argument("--preset", choices=["tiny", "paper"], help="use a preset's volume processor")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="stop at the first bad case, or skip and count bad cases")
    p.add_argument("--format", choices=["auto", "manifest", "ctrg", "ctrate"], default="auto")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="process only shard I of N (0-based; by case-id hash) into the same cache, e.g. one per "
                        "machine; default under accelerate launch / torchrun: RANK/WORLD_SIZE")
    p.add_argument("--no-progress", action="store_true")

    def run(args):
        cache = _module("data.cache")
        sharding = _module("data.sharding")
        shard = sharding.parse_shard(args.shard) if args.shard else sharding.shard_from_environment()
        if args.model:
            processor = cache.resolve_volume_processor(args.model)
        else:
            processor = _module("presets").preset_volume_processor(args.preset)
        report = cache.preprocess_dataset(args.data, args.output_dir, processor, num_workers=args.num_workers,
                                          on_error=args.on_error, progress=not args.no_progress, format=args.format,
                                          shard=shard)
        print(report)
        for case_id, path, reason in (report.load_problems + report.failures)[:20]:
            print(f"  skipped {case_id} ({path}): {reason}")
    return run


@command("train", "fine-tune with the HF Trainer (arguments: dia-llama train --help)", passthrough=True)
def train_command(p):
    def run(argv):
        return _module("train").main(argv)  # its parser accepts both spellings
    return run


@command("evaluate", "generate for a data set split and score it (NLG, clinical efficacy, diagnoses)")
def evaluate_command(p):
    p.add_argument("model", help="model folder or Hub id")
    p.add_argument("--data", required=True, help="data set (manifest, CTRG-Chest or CT-RATE folder)")
    p.add_argument("--split", default="test")
    p.add_argument("--output-dir", default="eval")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--labeler", default="rule")
    p.add_argument("--mode", action="append", choices=["coco_raw", "coco_ptb"], help="NLG protocol (repeatable)")
    p.add_argument("--cache-dir", default=None, help="preprocessing cache (dia-llama preprocess)")
    p.add_argument("--limit", type=int, default=None, help="only the first N cases")
    p.add_argument("--format", default="auto", dest="data_format")
    p.add_argument("--no-localization", action="store_true",
                   help="skip attention_localization (scored where the data set records finding locations)")
    _loading_arguments(p)

    def run(args):
        evaluation = _module("evaluation")
        metrics = evaluation.evaluate_model(
            args.model, args.data, args.split, args.output_dir, batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens, labeler=args.labeler, modes=tuple(args.mode or ["coco_raw"]),
            cache_dir=args.cache_dir, limit=args.limit, data_format=args.data_format,
            localization=not args.no_localization, **_loading_kwargs(args))
        print(evaluation.metrics_markdown(metrics))
    return run


@command("score", "score predictions against references (NLG + clinical efficacy)")
def score_command(p):
    p.add_argument("file", metavar="FILE", help="CSV/TSV/JSONL/JSON with ids, references and predictions")
    p.add_argument("--id-column", default="id")
    p.add_argument("--reference-column", default="reference")
    p.add_argument("--prediction-column", default="prediction")
    _labeler_arguments(p, allow_none=True)
    p.add_argument("--mode", action="append", choices=["coco_raw", "coco_ptb"], default=None,
                   help="NLG protocol; repeat for several (default coco_raw)")
    p.add_argument("--output", "--json", dest="output", metavar="OUT.json", default=None,
                   help="also write all metrics as JSON here")

    def run(args):
        import json
        from pathlib import Path

        evaluation = _module("evaluation")
        metrics = evaluation.score_file(
            args.file, id_column=args.id_column, reference_column=args.reference_column,
            prediction_column=args.prediction_column,
            labeler=evaluation.build_labeler(args.labeler, args.disease_set, args.labeler_weights),
            modes=args.mode or ["coco_raw"])
        print(evaluation.metrics_markdown(metrics))
        if args.output:
            out = Path(args.output)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
            print(f"metrics written to {out}")
    return run


@command("label", "label reports with a report labeler")
def label_command(p):
    p.add_argument("file", metavar="FILE", help="CSV/TSV/JSONL/JSON with a report column")
    p.add_argument("--column", default="report", help="column holding the report text (default: report)")
    p.add_argument("--id-column", default="id", help="id column (row numbers if absent)")
    _labeler_arguments(p, allow_none=False)
    p.add_argument("--output", metavar="OUT.csv", default=None,
                   help="output CSV (default: <FILE stem>.<labeler>_labels.csv beside FILE)")
    p.add_argument("--present-only", action="store_true", help="write 0/1 instead of the 4-state codes")

    def run(args):
        evaluation = _module("evaluation")
        out = evaluation.label_file(
            args.file, args.column, labeler=evaluation.build_labeler(args.labeler, args.disease_set,
                                                                      args.labeler_weights),
            output=args.output, id_column=args.id_column, present_only=args.present_only)
        print(f"labels written to {out}")
    return run


@command("generate", "diagnose scans and write their reports (one JSON line per scan, resumable)")
def generate_command(p):
    p.add_argument("model", help="model folder or Hub id")
    p.add_argument("scans", nargs="+", metavar="SCAN",
                   help="NIfTI / NRRD / MHA / .npy files, DICOM series folders, folders of scans, glob patterns "
                        "(quoted) or a CSV/JSONL manifest with a 'volume' column")
    p.add_argument("--output", metavar="FILE.jsonl", default=None,
                   help="append one JSON record per scan here; scans already in it are skipped (resume)")
    p.add_argument("--json", action="store_true", help="print JSON records (schema: inference.RECORD_SCHEMA)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--no-progress", action="store_true")
    _loading_arguments(p)

    def run(args):
        from pathlib import Path

        inference = _module("inference")
        sources = inference.expand_scan_sources(args.scans)
        model, processor = inference.load_for_inference(args.model, **_loading_kwargs(args))
        kwargs = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens is not None else {}
        output = Path(args.output) if args.output else None
        summary = inference.generate_to_stream(model, processor, sources, str(args.model), output=output,
                                               as_json=args.json, batch_size=args.batch_size,
                                               progress=not args.no_progress, **kwargs)
        where = f"; records in {output}" if output else ""
        skipped = f", {summary.skipped} already in the output" if summary.skipped else ""
        print(f"{PROG} generate: {summary.written} reports, {summary.failed} failed{skipped}{where}", file=sys.stderr)
        return 1 if summary.failed else 0
    return run


@command("app", "a web viewer: the scan, the disease attention and the report side by side (Gradio)")
def app_command(p):
    p.add_argument("model", help="model folder or Hub id")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--num-threads", type=int, default=None,
                   help="torch CPU threads (default: 1 for a small model on the CPU, else torch's default)")
    p.add_argument("--allow-non-ct", action="store_true",
                   help="report on volumes that are not CT (MR, PET, ...) instead of refusing them")
    p.add_argument("--max-file-size", default="2gb", help="largest upload (default: 2gb)")
    _loading_arguments(p)

    def run(args):
        _module("app").launch_app(args.model, host=args.host, port=args.port, allow_non_ct=args.allow_non_ct,
                                  max_new_tokens=args.max_new_tokens, num_threads=args.num_threads,
                                  max_file_size=args.max_file_size, **_loading_kwargs(args))
    return run


@command("push", "publish a model folder to the Hugging Face Hub (one commit)")
def push_command(p):
    p.add_argument("model_dir", help="a save_pretrained folder (safetensors weights)")
    p.add_argument("repo_id", help="namespace/name on the Hub")
    p.add_argument("--private", action="store_true", help="create the repo private (new repos only)")
    p.add_argument("--revision", default=None, help="branch to push to (created from main if missing)")
    p.add_argument("--dry-run", metavar="OUTPUT_DIR", default=None, help="only stage the upload into OUTPUT_DIR")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")

    def run(args):
        result = _module("hub").push_to_hub(args.model_dir, args.repo_id, private=args.private,
                                            revision=args.revision, commit_message=args.commit_message,
                                            token=args.token, dry_run_dir=args.dry_run)
        print(f"staged in {result}" if args.dry_run is not None else f"pushed: {result}")
    return run


@command("convert-official", "import the paper authors' weights")
def convert_command(p):
    p.add_argument("checkpoint", help="the official pytorch_model.bin (or .safetensors / a folder of shards)")
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="where to write the Dia-LLaMA model folder")
    p.add_argument("--llm", default=None, help="LLaMA-2 folder with its tokenizer (required; weights optional)")
    p.add_argument("--preset", choices=["paper", "tiny"], default="paper")
    p.add_argument("--legacy-pooling", action="store_true",
                   help="reproduce the research code's inference-time pooling bug (for exact parity)")
    p.add_argument("--no-merge-lora", action="store_true", help="do not merge the LoRA adapters (report them only)")
    p.add_argument("--lora-alpha", type=float, default=32.0)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--dtype", choices=["official", "auto", "float32", "bfloat16", "float16"], default="official",
                   help="official (default): language model float16, vision side and τ float32, as the official "
                        "inference; auto: the checkpoint's dtype")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="write the model even if keys stay unmapped, shapes differ or weights are missing")
    p.add_argument("--report", default=None, metavar="FILE.json", help="also write the conversion report here")

    def run(args):
        import json
        from pathlib import Path

        out, report = _module("convert").convert_official_checkpoint(
            args.checkpoint, args.output_dir, llm=args.llm, preset=args.preset, legacy_pooling=args.legacy_pooling,
            merge_lora=not args.no_merge_lora, lora_alpha=args.lora_alpha, lora_r=args.lora_r, dtype=args.dtype,
            strict=not args.allow_incomplete)
        if args.report:
            Path(args.report).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(report.summary())
        print(f"wrote the converted Dia-LLaMA to {out}")
    return run


@command("demo", "the end-to-end demo on the synthetic benchmark (CPU)")
def demo_command(p):
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--num-cases", type=int, default=None, help="cases to synthesize (default: the demo's)")
    p.add_argument("--max-steps", type=int, default=None, help="default: the tiny_cpu recipe's")
    p.add_argument("--batch-size", type=int, default=None, help="default: the tiny_cpu recipe's")
    p.add_argument("--learning-rate", type=float, default=None, help="default: the tiny_cpu recipe's")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--volume-size", type=int, nargs=3, default=None, metavar=("H", "W", "D"),
                   help="size the cases are synthesized at (default: the tiny model's 64 64 32)")
    p.add_argument("--bf16", choices=("auto", "true", "false"), default="auto",
                   help="bf16 autocast for training (auto: where the CPU runs bf16 natively)")

    def run(args):
        import time

        start = time.perf_counter()
        _module("demo").run_demo(
            args.output_dir, num_cases=args.num_cases, seed=args.seed, max_steps=args.max_steps,
            batch_size=args.batch_size, learning_rate=args.learning_rate, num_workers=args.num_workers,
            volume_size=tuple(args.volume_size) if args.volume_size else None,
            bf16=None if args.bf16 == "auto" else args.bf16 == "true")
        print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return run


@command("ablate", "the paper's ablations (Tables 2-3) on the synthetic benchmark")
def ablate_command(p):
    p.add_argument("--data", required=True, help="synthetic benchmark folder (dia-llama synth)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--settings", nargs="+", default=None, help="a subset of the settings (default: all)")
    p.add_argument("--output-dir", default="runs/ablate")
    p.add_argument("--max-steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate only the first N test cases")
    p.add_argument("--title", default="Synthetic benchmark")
    p.add_argument("--vision-config", default=None,
                   help="JSON of vision-config fields over the preset's (train --vision_config)")

    def run(args):
        _module("ablate").run_ablation(
            args.data, args.output_dir, args.preset, tuple(args.seeds), args.settings, args.max_steps,
            args.batch_size, args.learning_rate, args.cache_dir, args.eval_limit, args.title, args.vision_config)
    return run


# ---------------------------------------------------------------------------------------------------------------------
# Parsing and dispatch


def _option(arg: str, separator: str) -> str:
    """`--foo_bar=x` ↔ `--foo-bar=x`: the option name with `separator` between its words (values untouched)."""
    match = re.fullmatch(r"(--[A-Za-z0-9][A-Za-z0-9_-]*)(=.*)?", arg)
    if not match:
        return arg
    name = "--" + re.sub(r"[-_]", separator, match.group(1)[2:])
    return name + (match.group(2) or "")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("dia-llama")
    except PackageNotFoundError:
        return "unknown (not installed)"


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line `dia-llama: error: …` (exit code 2) pointing at `--help`."""

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (cheap: only argparse; implementations load when a command runs)."""
    parser = OneLineErrorParser(prog=PROG, description="Dia-LLaMA: radiology reports from 3D chest CT")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineErrorParser)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, add_help=not cmd.passthrough)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
        p.set_defaults(run=cmd.define(p))
    return parser


def _message(err: BaseException) -> str:
    """The error's message on one line (a KeyError's without the quotes repr adds)."""
    if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str):
        text = err.args[0]
    else:
        text = str(err)
    return " ".join(text.split()) or type(err).__name__


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings for the user, without the source line: `dia-llama: warning: …`."""
    return f"{PROG}: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.formatwarning = _format_warning
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    name = next((a for a in argv if not a.startswith("-")), None)
    debug = "--debug" in argv
    try:
        if name in COMMANDS and COMMANDS[name].passthrough:
            rest = [a for a in argv[argv.index(name) + 1:] if a != "--debug"]
            return int(COMMANDS[name].define(parser)(rest) or 0)
        args = parser.parse_args([_option(a, "-") if a.startswith("--") else a for a in argv])
        debug = debug or getattr(args, "debug", False)
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line for the user; the traceback with --debug
        if debug:
            raise
        user_error = isinstance(err, USER_ERRORS)
        hint = "" if user_error else f" ({type(err).__name__}; rerun with --debug for the traceback)"
        print(f"{PROG}: error: {_message(err)}{hint}", file=sys.stderr)
        return 2 if user_error else 1


if __name__ == "__main__":
    sys.exit(main())
