"""`python -m alexnet_tf.serve`: see alexnet_tf/serve/__init__.py."""

from alexnet_tf import cli


def main() -> int:
    from alexnet_tf.serve.command import main  # TensorFlow: after cli.program's console.quiet()

    return main()


cli.program(main)
