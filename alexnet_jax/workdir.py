"""A run's directory: its files, written whole or not at all, and one writer at a time.

    WORKDIR/config.json      the run's config (resolved splits included)
    WORKDIR/data.json        its data: class names, split sizes, a digest of the examples
    WORKDIR/metrics.jsonl    one JSON object per line (alexnet_jax.metrics)
    WORKDIR/done.json        written once every step is trained and the last evaluated
    WORKDIR/checkpoints/     Orbax (alexnet_jax.checkpoint)
    WORKDIR/.lock            who is writing: host, pid, start time

Every path goes through `etils.epath`, so a workdir may be local or on cloud
storage (gs://, s3://). Files are replaced atomically: locally by a temporary
file and a rename; on object stores an upload appears whole or not at all.
Every reader names the file it could not read and what to do about it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from typing import Any

from etils import epath

CONFIG_FILE = "config.json"
DATA_FILE = "data.json"  # what identifies the data the run trains on (DatasetInfo.identity)
METRICS_FILE = "metrics.jsonl"
DONE_FILE = "done.json"
LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoints"


class WorkdirError(RuntimeError):
  """The workdir cannot be used as asked (locked, unreadable, another run's)."""


def path(workdir) -> epath.Path:
  return epath.Path(workdir)


def is_local(p) -> bool:
  return "://" not in os.fspath(p)


def absolute(p) -> epath.Path:
  """An absolute epath (local paths resolved against the current directory)."""
  p = epath.Path(p)
  return epath.Path(os.path.abspath(p)) if is_local(p) else p


def write_bytes_atomic(target, data: bytes) -> None:
  """Replaces `target` with `data` so that a reader sees the old or the new file, never half."""
  target = epath.Path(target)
  if not is_local(target):
    target.write_bytes(data)  # An object upload is atomic.
    return
  tmp = target.parent / f".{target.name}.tmp.{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def write_text_atomic(target, text: str) -> None:
  write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target, value: Any) -> None:
  write_text_atomic(target, json.dumps(value, indent=2) + "\n")


def read_json(target, what: str) -> Any:
  """The JSON in `target`; a WorkdirError naming the file (and `what` it is) otherwise."""
  target = epath.Path(target)
  try:
    return json.loads(target.read_text())
  except FileNotFoundError:
    raise
  except (OSError, ValueError) as e:
    raise WorkdirError(
        f"Cannot read {what} {target}: {type(e).__name__}: {e}. Move the file aside (or "
        "restore it from a copy) and rerun.") from e


def read_done(workdir) -> dict | None:
  """done.json of a finished run, or None (missing or unreadable counts as not finished)."""
  try:
    return read_json(path(workdir) / DONE_FILE, "the finished-run marker")
  except (FileNotFoundError, WorkdirError):
    return None


def write_done(workdir, step: int, total_steps: int, metrics: dict) -> None:
  write_json_atomic(path(workdir) / DONE_FILE, {
      "step": int(step), "total_steps": int(total_steps),
      "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}})


def clear_done(workdir) -> None:
  (path(workdir) / DONE_FILE).unlink(missing_ok=True)


def holds_training_run(workdir) -> bool:
  """Whether a training run has written here (its config, metrics or checkpoints)."""
  p = path(workdir)
  return (p / METRICS_FILE).exists() or (p / DONE_FILE).exists() or (
      (p / CHECKPOINT_DIR).exists() and any((p / CHECKPOINT_DIR).iterdir()))


# ----------------------------------------------------------------------------
# One writer at a time.
# ----------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class Lock:
  """Held by the run's process 0 while it writes the workdir.

  A second run on a locked workdir fails at once, naming the holder. A lock
  left by a process that is gone (same host, pid not running) is taken over
  with a warning. Locks on other hosts cannot be checked; the message says
  how to take one over when its holder is known to be dead.
  """

  def __init__(self, workdir, *, command: str = ""):
    self.file = path(workdir) / LOCK_FILE
    self.info = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
                 "command": command}
    self._held = False

  def _holder(self) -> dict | None:
    try:
      return json.loads(self.file.read_text())
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      return {}  # Half-written by a process that died mid-write: treat as stale.

  def acquire(self) -> None:
    text = json.dumps(self.info)
    for _ in range(2):
      if is_local(self.file):
        try:
          fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
          pass
        else:
          with os.fdopen(fd, "w") as f:
            f.write(text)
          self._held = True
          return
      elif not self.file.exists():
        self.file.write_text(text)
        self._held = True
        return
      holder = self._holder()
      if holder is None:
        continue  # Released in between: try again.
      if holder and holder.get("host") == self.info["host"] and _pid_alive(int(holder["pid"])):
        raise WorkdirError(
            f"{self.file.parent} is in use by process {holder['pid']} on this host (since "
            f"{time.ctime(holder['since'])}: {holder.get('command') or 'a training run'}). "
            "Wait for it to finish or stop it, or use another --workdir.")
      if holder and holder.get("host") != self.info["host"]:
        raise WorkdirError(
            f"{self.file.parent} is in use by process {holder.get('pid')} on host "
            f"{holder.get('host')} (since {time.ctime(holder.get('since', 0))}). If that run "
            f"is gone, delete {self.file} and rerun.")
      logging.warning("Taking over the lock of %s from process %s, which is no longer running.",
                      self.file.parent, holder.get("pid") if holder else "unknown")
      self.file.unlink()
    raise WorkdirError(f"Could not lock {self.file.parent}; another process keeps taking it.")

  def release(self) -> None:
    if self._held:
      self.file.unlink(missing_ok=True)
      self._held = False

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()


# ----------------------------------------------------------------------------
# Start-up checks.
# ----------------------------------------------------------------------------


def _changes(old: dict, new: dict, ignore=frozenset()) -> list[str]:
  """`key: old in the workdir, new now` for every key whose values differ."""
  return [f"{k}: {_short(old.get(k))} in the workdir, {_short(new.get(k))} now"
          for k in sorted(old.keys() | new.keys())
          if k.split(".")[0] not in ignore and old.get(k) != new.get(k)]


def _short(value) -> str:
  text = repr(value)
  return text if len(text) <= 200 else text[:197] + "..."


def check_resumable(workdir, config, data: dict | None = None) -> None:
  """Refuses another run's workdir; reads only, so it runs before anything is written.

  A workdir whose config.json differs from this config in keys other than
  config_lib.RESUMABLE_KEYS would resume someone else's run with new
  settings; one whose data.json differs from `data` (DatasetInfo.identity:
  class names, split sizes, a digest of the examples) would resume on other
  data, e.g. with its labels permuted by a renamed class folder. Both need
  --config.allow_config_change=True.
  """
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  check_utf8_path(workdir, "--workdir")
  root = path(workdir)
  config_file, data_file = root / CONFIG_FILE, root / DATA_FILE
  if config.allow_config_change:
    return
  if config_file.exists():
    stored = config_lib.from_dict(read_json(config_file, "the run's config"))
    changed = _changes(traverse_util.flatten_dict(config_lib.to_dict(stored), sep="."),
                       traverse_util.flatten_dict(config_lib.to_dict(config), sep="."),
                       ignore=config_lib.RESUMABLE_KEYS)
    if changed:
      raise WorkdirError(
          f"The workdir {workdir} holds a run with a different config:\n  "
          + "\n  ".join(changed) + "\nUse another --workdir, or pass "
          "--config.allow_config_change=True to resume it with the new values.")
  if data is not None and data_file.exists():
    changed = _changes(read_json(data_file, "the run's data identity"), data)
    if changed:
      raise WorkdirError(
          f"The workdir {workdir} holds a run trained on different data (a changed or "
          f"renamed class folder, added or removed files):\n  " + "\n  ".join(changed) +
          "\nRestore the data it was trained on, or use another --workdir (pass "
          "--config.allow_config_change=True to resume on this data anyway).")


def make_writable(workdir) -> None:
  """Creates the workdir and checkpoints/ and proves both writable (a clear error if not)."""
  root = path(workdir)
  for directory in (root, root / CHECKPOINT_DIR):
    try:
      directory.mkdir(parents=True, exist_ok=True)
      probe = directory / f".write_probe.{os.getpid()}"
      probe.write_text("ok")
      probe.unlink()
    except OSError as e:
      raise PermissionError(
          f"{directory} is not writable ({e.strerror or e}, errno {e.errno}); pass a writable "
          "--workdir.") from e


def check_utf8_path(p, what: str) -> None:
  """Refuses a path that is not valid UTF-8 (bytes that are not, or a locale that cannot
  spell it): Orbax's TensorStore writes only UTF-8 paths, so the run would train and then
  fail at its first save."""
  try:
    os.fspath(p).encode("utf-8")
  except UnicodeEncodeError:
    raise WorkdirError(
        f"{what} {os.fspath(p).encode('utf-8', 'backslashreplace').decode()} is not valid "
        "UTF-8 here (bytes that are not UTF-8, or a locale such as LANG=C that cannot spell "
        "it). Checkpoints need UTF-8 paths: rename it, or run under a UTF-8 locale "
        "(PYTHONUTF8=1).") from None


def check_free_space(directory, needed_bytes: int) -> None:
  """Refuses to start when `directory` cannot hold one checkpoint of `needed_bytes`.

  A run that would only fail at its first save wastes the compile and the
  steps before it. Object stores have no such limit and are not checked.
  """
  if not is_local(directory):
    return
  try:
    free = shutil.disk_usage(os.fspath(directory)).free
  except OSError as e:
    raise PermissionError(f"Cannot read the free space of {directory} ({e.strerror or e}, "
                          f"errno {e.errno}).") from e
  if free < needed_bytes:
    raise WorkdirError(
        f"{directory} has {free / 2**20:.1f} MiB free, but one checkpoint of this run needs "
        f"about {needed_bytes / 2**20:.1f} MiB (params and optimizer state). Free space there "
        "or pass another --workdir.")


def write_config(workdir, config, data: dict | None = None) -> None:
  """config.json, and data.json when the data's identity is given."""
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  write_json_atomic(path(workdir) / CONFIG_FILE, config_lib.to_dict(config))
  if data is not None:
    write_json_atomic(path(workdir) / DATA_FILE, data)


# ----------------------------------------------------------------------------
# metrics.jsonl: the one reader, and the repair a resume does.
# ----------------------------------------------------------------------------


def _read_jsonl(target) -> tuple[list[dict], int]:
  """(complete records, number of lines that were not JSON objects); ([], 0) when missing."""
  try:
    text = target.read_text()
  except FileNotFoundError:
    return [], 0
  records, bad = [], 0
  for line in text.splitlines():
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      bad += 1
      continue
    if isinstance(record, dict) and "step" in record:
      records.append(record)
    else:
      bad += 1
  return records, bad


def read_metrics(workdir) -> list[dict]:
  """All complete records of WORKDIR/metrics.jsonl, in file order ([] when there is none).

  A line cut short by a killed writer is skipped (and said in a warning);
  resumed runs repair the file, so it reads as one run.
  """
  target = path(workdir) / METRICS_FILE
  records, bad = _read_jsonl(target)
  if bad:
    logging.warning("Skipped %d unreadable line(s) of %s (a run killed mid-write).", bad, target)
  return records


def append_metrics(workdir, record: dict) -> None:
  """Appends one record to metrics.jsonl, flushed at once so a killed run keeps it."""
  target = path(workdir) / METRICS_FILE
  line = json.dumps(record) + "\n"
  if is_local(target):
    with open(target, "a") as f:  # Plain open: appends, and no path layer in between.
      f.write(line)
  else:  # Object stores cannot append: upload the whole (small) file again.
    try:
      text = target.read_text()
    except FileNotFoundError:
      text = ""
    target.write_text(text + line)


def repair_metrics(workdir, last_step: int) -> int:
  """Keeps the complete records up to `last_step` (the step a run resumes from).

  A torn last line and records past the restored checkpoint (the steps the
  resumed run will train again) are dropped, so the file reads as one run.
  Returns how many lines were dropped.
  """
  target = path(workdir) / METRICS_FILE
  records, bad = _read_jsonl(target)
  kept = [r for r in records if r["step"] <= last_step]
  dropped = bad + len(records) - len(kept)
  if dropped:
    write_text_atomic(target, "".join(json.dumps(r) + "\n" for r in kept))
    logging.info("Resuming at step %d: dropped %d record(s) of %s past it or cut short.",
                 last_step, dropped, target)
  return dropped
