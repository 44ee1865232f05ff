"""Top-1 and top-5 error of trained nets, measured as in the paper's Table 2.

`python -m alexnet_tf.evaluate [RECIPE] --workdir DIR [--workdir DIR2 ...] [--data SPEC]
[--crops center|ten] [--out DIR] [--set k=v ...]`

Top-1 and top-5 error on a validation split, from the centre crop or from the softmax
averaged over the ten crops of Sec. 4.1 (four corners, the centre, and their
reflections). Several `--workdir`s average their softmax outputs, like the paper's
"5 CNNs" and "7 CNNs" rows. A `--workdir` may also name one checkpoint
(`runs/x/checkpoints/ckpt-1000`) instead of a run's newest.

The data: that of the first run (its source and validation split), or the RECIPE's, with
`--data` and `--set` on top (`--set data.eval_examples=N` for the first N images). Each
net is prepared as it was trained (its run's resize, crop, mean image).
"""

from __future__ import annotations

import json
import os

from alexnet_tf import cli


def main(argv=None) -> int:
    p = cli.parser("evaluate", __doc__)
    cli.add_recipe(p)
    cli.add_workdir(p, "run folder or checkpoint; repeat to average nets", required=True, repeat=True)
    cli.add_data(p)
    p.add_argument("--crops", choices=("center", "ten"), default="ten", help="centre crop or Sec. 4.1's 10 crops")
    cli.add_out(p, "folder for evaluation.json (the results)", required=False)
    cli.add_overrides(p)
    return cli.main(p, _main, argv)


def _main(
    recipe: str | None, workdir: list[str], data: str | None, crops: str, out: str | None, overrides: list[str]
) -> None:
    # TensorFlow: loaded once the arguments parse
    from alexnet_tf.evaluation import evaluate_nets, format_table
    from alexnet_tf.runs import load_net

    config = cli.eval_config(recipe, workdir[0], data, overrides)
    nets = [load_net(path) for path in workdir]
    batch = config.train.eval_batch_size or config.train.batch_size
    results = evaluate_nets(nets, config.data, crops=crops, batch_size=batch)
    print(format_table(results))
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "evaluation.json"), "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    raise SystemExit(main())
