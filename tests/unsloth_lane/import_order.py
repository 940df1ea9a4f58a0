"""Run a Python script as __main__, recording the order in which top-level packages are first imported.

  python tests/unsloth_lane/import_order.py LOG scripts/train_qlora.py --recipe ...

A finder at the front of sys.meta_path sees every import that is not already in sys.modules; the first time it sees a
top-level package it appends the name to LOG (one per line, flushed at once, so a crash still leaves the order).
An import of `unsloth` is recorded when it starts, before anything Unsloth imports itself.
"""

import importlib.abc
import runpy
import sys


class _Recorder(importlib.abc.MetaPathFinder):
    def __init__(self, log_path: str) -> None:
        self.seen = set(name.partition(".")[0] for name in sys.modules)  # already there: the interpreter's own
        self.log = open(log_path, "a", encoding="utf-8", buffering=1)

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top not in self.seen:
            self.seen.add(top)
            self.log.write(top + "\n")
        return None  # only watching: the real finders do the work


def main() -> None:
    log_path, script = sys.argv[1], sys.argv[2]
    sys.meta_path.insert(0, _Recorder(log_path))
    sys.argv = sys.argv[2:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
