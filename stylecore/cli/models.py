"""``stylecore models``: the feedforward models you can pass to ``--model``."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the feedforward models (shipped and your own) for --model",
        description=(
            "Feedforward mode stylizes with a small network trained for one style. This lists the models "
            "shipped with stylecore and those in your model folder (trained with 'python -m training.train' "
            "or Blender's Train Style): name, style, loss network and training settings. Pass the name to "
            "'stylecore stylize --model NAME', or give --style IMAGE in feedforward mode to pick the model "
            "trained on that image."
        ),
        epilog=(
            "examples:\n"
            "  stylecore models\n"
            "  stylecore models --json\n"
            "  stylecore stylize clip.mp4 --model scream -o out.mp4\n"
            "\n"
            "Your model folder is $STYLECORE_MODELS, else the platform's data folder (shown below the list).\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the list as JSON (for scripts)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from stylecore.catalog import broken_models, list_models, user_models_dir

    entries = list_models()
    if args.json:
        print(json.dumps([
            {
                "name": e.name,
                "origin": e.origin,
                "path": str(e.path),
                "style": e.style_name,
                "thumbnail": str(e.thumbnail) if e.thumbnail else None,
                "loss_network": e.loss_network,
                "training": e.training,
            }
            for e in entries
        ], indent=2))
        return 0
    width = max([20, *(len(e.name) for e in entries)])  # names line up, the longest included
    for e in entries:
        t = e.training
        steps = _training_summary(t) if t else "training settings unknown"
        if e.teacher:
            blocks = f" and {t['res_blocks']} residual blocks" if t.get("res_blocks") is not None else ""
            steps += f"; distilled from {e.teacher} at {t.get('width', '?')}x its width{blocks} (faster)"
        print(f"{e.name:<{width}} {e.origin:<8} style {e.style_name or '?'}; {e.loss_network or '?'} loss network; {steps}")
        print(f"{'':<{width}} {e.path}")
        if e.thumbnail:
            print(f"{'':<{width}} style thumbnail: {e.thumbnail}")
    for path, reason in broken_models():
        print(f"unreadable: {path}: {reason}")
    print(f"\nyour model folder: {user_models_dir()}")
    return 0


def _training_summary(training: dict) -> str:
    """``N steps at S px``, or for a model fine-tuned from others (``--init``, recorded down
    the chain) the steps of every stage: ``2200 steps in 4 stages (the last 300 at 192 px)``."""
    stages, t = [], training
    while isinstance(t, dict):
        stages.append(t)
        t = (t.get("init") or {}).get("training")
    steps, size = training.get("steps", "?"), training.get("size", "?")
    if len(stages) == 1:
        return f"{steps} steps at {size} px"
    counts = [s.get("steps") for s in stages]
    total = sum(counts) if all(isinstance(c, int) for c in counts) else "?"
    return f"{total} steps in {len(stages)} stages (the last {steps} at {size} px)"
