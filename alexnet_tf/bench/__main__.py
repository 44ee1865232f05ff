"""`python -m alexnet_tf.bench`: see alexnet_tf/bench/__init__.py."""

from alexnet_tf import cli


def main() -> int:
    from alexnet_tf.bench import main  # TensorFlow: after cli.program's console.quiet()

    return main()


cli.program(main)
