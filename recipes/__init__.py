"""The shipped recipes, one file per experiment with a `get_config()` function; installed
as alexnet_tf/recipes, where `alexnet_tf.config.load_recipe` finds them by name
(`recipes/quickstart.py`, `quickstart.py` or `quickstart`)."""
