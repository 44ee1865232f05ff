"""A run's folder: what `python -m alexnet_tf.train` writes there and every command reads,
named in this module alone.

    RUN/
      config.json      the run's resolved config (a run resumes, evaluates, exports from it)
      classes.json     the class names in label order (ImageNet's synsets with their names)
      stats.npz        the training set's mean image and RGB covariance (Sec. 2, 4.1)
      history.json     one entry per finished epoch (Fig. 1's curves)
      results.json     the final evaluation
      metrics.jsonl    every logged scalar, one JSON object a line
      train.lock       held by the training run's chief (`alexnet_tf.lock`)
      checkpoints/     the newest few; best/ the lowest validation error; unreadable/ in
                       either, the checkpoints set aside as unreadable
      tb/              TensorBoard's event files (tb/profile: the profiler's traces)
      _nonchief/TASK/  where a worker other than the chief saves, removed after each save

Files a run rewrites are written beside and renamed (`write_json`, `write_stats`):
a reader, or a run stopped by a full disk, sees the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os

from alexnet_tf import paths
from alexnet_tf.config import Config, load_json, to_dict

CONFIG = "config.json"
CLASSES = "classes.json"
STATS = "stats.npz"
HISTORY = "history.json"
RESULTS = "results.json"
METRICS = "metrics.jsonl"
LOCK = "train.lock"
CHECKPOINTS = "checkpoints"
BEST = "best"  # the folder in checkpoints/ and the name its checkpoint is saved under
UNREADABLE = "unreadable"  # the folder in a checkpoint folder where unreadable ones are set aside
TENSORBOARD = "tb"
PROFILE = "profile"
NONCHIEF = "_nonchief"


def write_json(path: str, value) -> None:
    """Writes JSON to a temporary name and renames it: readers see the old file or the
    new one, never half of one."""
    try:
        with open(path + ".tmp", "w") as f:
            json.dump(value, f, indent=1)
            f.write("\n")
        os.replace(path + ".tmp", path)
    except BaseException:
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")  # e.g. a full disk: the old file stays, no half copy beside it
        raise


class RunFolder:
    """The folder of one run, `path` relative to the working directory or absolute (kept
    absolute): where each of its files is, and their reads and writes. The folder's
    lock (`alexnet_tf.lock.RunLock`) is taken on `lock`."""

    def __init__(self, path: str | os.PathLike):
        self.path = paths.resolve(path)

    def __repr__(self) -> str:
        return f"RunFolder({self.path!r})"

    def _file(self, *names: str) -> str:
        return os.path.join(self.path, *names)

    # ---------------------------------------------------------------- where
    @property
    def config(self) -> str:
        return self._file(CONFIG)

    @property
    def classes(self) -> str:
        return self._file(CLASSES)

    @property
    def stats(self) -> str:
        return self._file(STATS)

    @property
    def history(self) -> str:
        return self._file(HISTORY)

    @property
    def results(self) -> str:
        return self._file(RESULTS)

    @property
    def metrics(self) -> str:
        return self._file(METRICS)

    @property
    def lock(self) -> str:
        return self._file(LOCK)

    @property
    def checkpoints(self) -> str:
        return self._file(CHECKPOINTS)

    @property
    def best(self) -> str:
        return self._file(CHECKPOINTS, BEST)

    @property
    def tensorboard(self) -> str:
        return self._file(TENSORBOARD)

    @property
    def profile(self) -> str:
        return self._file(TENSORBOARD, PROFILE)

    def nonchief(self, task: str) -> str:
        """Where worker `task` (not the chief) saves its checkpoints."""
        return self._file(NONCHIEF, task)

    @classmethod
    def of_checkpoint(cls, prefix: str) -> RunFolder:
        """The run folder of a checkpoint prefix in its checkpoints/ (or checkpoints/best/)."""
        folder = os.path.dirname(paths.resolve(prefix))
        if os.path.basename(folder) == BEST:
            folder = os.path.dirname(folder)
        return cls(os.path.dirname(folder))

    # ---------------------------------------------------------------- what is there
    def has_config(self) -> bool:
        return os.path.isfile(self.config)

    def holds_run(self) -> bool:
        """A config.json and a checkpoints/ folder: what `train` leaves (or `convert`)."""
        return self.has_config() and os.path.isdir(self.checkpoints)

    # ---------------------------------------------------------------- reads and writes
    def read_config(self) -> Config:
        """Its config.json, the paths in it resolved (`alexnet_tf.paths`)."""
        return paths.resolve_config(load_json(self.config))

    def write_config(self, config: Config) -> None:
        write_json(self.config, to_dict(config))

    def write_classes(self, class_names: list, descriptions: list | None = None) -> None:
        """classes.json: the class names in label order; ImageNet's synsets each with its
        readable name beside it (["n01440764", "tench, Tinca tinca"])."""
        from alexnet_tf.data.records import imagenet_class_descriptions

        descriptions = descriptions or imagenet_class_descriptions(class_names)
        write_json(self.classes, list(zip(class_names, descriptions)) if descriptions else class_names)

    def read_classes(self, num_classes: int) -> tuple[list, list | None]:
        """(class names, readable names or None), from classes.json (either form
        `write_classes` writes; ImageNet's synsets written without their names get them
        here); numbers for a run without one."""
        from alexnet_tf.data.records import imagenet_class_descriptions

        if not os.path.isfile(self.classes):
            return [str(i) for i in range(num_classes)], None
        with open(self.classes) as f:
            entries = json.load(f)
        if entries and all(isinstance(e, list) for e in entries):
            return [str(e[0]) for e in entries], [str(e[1]) for e in entries]
        names = [str(e) for e in entries]
        return names, imagenet_class_descriptions(names)

    def has_stats(self) -> bool:
        return os.path.exists(self.stats)

    def read_stats(self):
        """stats.npz as `data.Stats`."""
        from alexnet_tf.data import Stats  # TensorFlow: only where a net's statistics are read

        return Stats.load(self.stats)

    def write_stats(self, stats) -> None:
        """`stats` (`data.Stats`) as stats.npz, written beside and renamed: never a half
        file for a resume to read."""
        tmp = self.stats + ".tmp.npz"
        try:
            stats.save(tmp)
            os.replace(tmp, self.stats)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def drop_stats(self) -> None:
        if self.has_stats():
            os.remove(self.stats)

    def read_history(self) -> list[dict]:
        """history.json's entries, [] before the first epoch's end."""
        if not os.path.exists(self.history):
            return []
        with open(self.history) as f:
            return json.load(f)

    def write_history(self, history: list[dict]) -> None:
        write_json(self.history, history)

    def write_results(self, results: dict) -> None:
        write_json(self.results, results)

    def read_results(self) -> dict | None:
        """results.json, None for a run that has not finished."""
        if not os.path.exists(self.results):
            return None
        with open(self.results) as f:
            return json.load(f)
