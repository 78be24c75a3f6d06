"""`dia-llama` command line: one entry point, subcommands that are thin layers over Python functions."""

from __future__ import annotations

import argparse
import importlib
import sys


# name → (module, function adding its arguments, function running it, help)
COMMANDS = {
    "init": ("cli", "add_init_arguments", "run_init", "write an untrained model + processor folder"),
    "synth": ("cli", "add_synth_arguments", "run_synth", "write the synthetic chest-CT benchmark (NIfTI + manifest)"),
    "preprocess": ("data.cache", "add_preprocess_arguments", "run_preprocess", "cache processed volumes for training"),
    "train": ("train", None, "main", "fine-tune with the HF Trainer (arguments: python -m dia_llama.train -h)"),
    "evaluate": ("evaluate", "add_evaluate_arguments", "run_evaluate", "generate for a split and score it"),
    "demo": ("demo", "add_demo_arguments", "run_demo_command", "the end-to-end demo on the synthetic benchmark (CPU)"),
    "ablate": ("ablate", "add_ablate_arguments", "run_ablate", "the paper's ablations on the synthetic benchmark"),
    "generate": ("inference", "add_generate_arguments", "run_generate", "diagnose scans and write their reports"),
    "score": ("scoring", "add_score_arguments", "run_score", "score predictions against references (NLG + CE)"),
    "label": ("scoring", "add_label_arguments", "run_label", "label reports with a report labeler"),
    "convert-official": ("convert", "add_convert_arguments", "run_convert", "import the paper authors' weights"),
    "push": ("hub", "add_push_arguments", "run_push", "publish a model folder to the Hugging Face Hub"),
}


def add_init_arguments(p) -> None:
    p.add_argument("out_dir")
    p.add_argument("--preset", choices=["tiny", "paper"], default="tiny")
    p.add_argument("--llm", default=None, help="local causal-LM checkpoint (weights + tokenizer) for the text part")
    p.add_argument("--disease-set", default="chexpert14", choices=["chexpert14", "ctrate18"])
    p.add_argument("--seed", type=int, default=0)


def run_init(args) -> int:
    from .presets import init_model_dir

    out = init_model_dir(args.out_dir, preset=args.preset, llm=args.llm, disease_names=args.disease_set, seed=args.seed)
    print(f"wrote an untrained {args.preset} Dia-LLaMA to {out}")
    return 0


def add_synth_arguments(p) -> None:
    p.add_argument("out_dir")
    p.add_argument("--num-cases", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--disease-set", default="chexpert14", choices=["chexpert14", "ctrate18"])
    p.add_argument("--volume-size", type=int, nargs=3, default=(128, 128, 64), metavar=("H", "W", "D"))
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--prevalence", default=None, help='JSON {disease: prevalence} overriding the defaults')
    p.add_argument("--rare-prevalence", type=float, default=None,
                   help="set every rare class (< 5 %% by default) to this prevalence")


def run_synth(args) -> int:
    import json

    from .data.synthetic import DEFAULT_PREVALENCE, synthesize_benchmark

    prevalence = json.loads(args.prevalence) if args.prevalence else None
    if args.rare_prevalence is not None:
        prevalence = dict(DEFAULT_PREVALENCE[args.disease_set], **(prevalence or {}))
        prevalence = {k: (args.rare_prevalence if v < 0.05 else v) for k, v in prevalence.items()}
    manifest = synthesize_benchmark(args.out_dir, num_cases=args.num_cases, seed=args.seed,
                                    disease_set=args.disease_set, volume_size=tuple(args.volume_size),
                                    prevalence=prevalence, num_workers=args.num_workers, progress=True)
    print(f"wrote {args.num_cases} cases: {manifest}")
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the chosen command's module is imported (keeps start-up fast)."""
    parser = argparse.ArgumentParser(prog="dia-llama", description="Dia-LLaMA: CT report generation from 3D chest CT")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, add_name, run_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command and add_name is not None:
            module = importlib.import_module(f"dia_llama.{module_name}")
            getattr(module, add_name)(p)
            p.set_defaults(func=getattr(module, run_name))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in COMMANDS and COMMANDS[command][1] is None:  # pass-through: the module parses its own arguments
        module_name, _, run_name, _ = COMMANDS[command]
        rest = argv[argv.index(command) + 1 :]
        return int(getattr(importlib.import_module(f"dia_llama.{module_name}"), run_name)(rest) or 0)
    args = build_parser(command).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
