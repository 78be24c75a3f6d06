"""`dia-llama` command line: one entry point, subcommands that are thin layers over Python functions."""

from __future__ import annotations

import argparse
import sys


def _cmd_init(args) -> int:
    from .presets import init_model_dir

    out = init_model_dir(args.out_dir, preset=args.preset, llm=args.llm, disease_names=args.disease_set, seed=args.seed)
    print(f"wrote an untrained {args.preset} Dia-LLaMA to {out}")
    return 0


def _add_init(sub) -> None:
    p = sub.add_parser("init", help="write an untrained model + processor folder (from_pretrained loads it)")
    p.add_argument("out_dir")
    p.add_argument("--preset", choices=["tiny", "paper"], default="tiny")
    p.add_argument("--llm", default=None, help="local causal-LM checkpoint (weights + tokenizer) for the text part")
    p.add_argument("--disease-set", default="chexpert14", choices=["chexpert14", "ctrate18"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_init)


def _optional_commands():
    """Subcommands contributed by other modules: (module, add-arguments function, run function, name, help)."""
    return [
        ("scoring", "add_score_arguments", "run_score", "score", "score predictions against references (NLG + CE)"),
        ("scoring", "add_label_arguments", "run_label", "label", "label reports with a report labeler"),
        ("hub", "add_push_arguments", "run_push", "push", "publish a model folder to the Hugging Face Hub"),
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dia-llama", description="Dia-LLaMA: CT report generation")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_init(sub)
    import importlib

    for module_name, add_name, run_name, name, help_text in _optional_commands():
        module = importlib.import_module(f"dia_llama.{module_name}")
        p = sub.add_parser(name, help=help_text)
        getattr(module, add_name)(p)
        p.set_defaults(func=getattr(module, run_name))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
