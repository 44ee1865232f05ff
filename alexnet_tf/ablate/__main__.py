"""`python -m alexnet_tf.ablate`: see alexnet_tf/ablate/__init__.py."""

from alexnet_tf import cli


def main() -> int:
    from alexnet_tf.ablate import main  # TensorFlow: after cli.program's console.quiet()

    return main()


cli.program(main)
