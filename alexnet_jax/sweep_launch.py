"""Launching a sweep's points: here (one or N at a time), or as a SLURM job array.

Every launcher runs the same unit, `run_one`: the point's training command, its
state written to `sweep_point.json` before and after, its output appended to
`sweep.log`. How `--parallel` shares devices and how SLURM array tasks resume:
docs/design.md, "Sweeps on a CPU share the cores" and "Sweeps on SLURM".
"""

from __future__ import annotations

import contextlib
from concurrent import futures
import os
import queue
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Sequence

from alexnet_jax import sweep as sweep_lib
from alexnet_jax import workdir as workdir_lib


def code_root() -> str:
  """The directory this alexnet_jax is imported from (a checkout or site-packages)."""
  import alexnet_jax  # pylint: disable=g-import-not-at-top
  return os.path.dirname(os.path.dirname(os.path.abspath(alexnet_jax.__file__)))


def child_env(env=None) -> dict:
  """A point's environment: the launching code first on PYTHONPATH (installed or not)."""
  env = dict(os.environ if env is None else env)
  parts = [code_root()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
  env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
  env.setdefault("PYTHONUNBUFFERED", "1")
  return env


class _Interrupts:
  """SIGINT/SIGTERM: passed on to the running points as SIGTERM (they save and exit)."""

  def __init__(self):
    self.signum = None
    self.children: set = set()
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread.
        pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.signum = signum
    for child in list(self.children):
      if child.poll() is None:
        child.send_signal(signal.SIGTERM)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class _Log:
  """A point's sweep.log: appended in place locally; staged and uploaded on object stores."""

  def __init__(self, point_dir):
    self.target = workdir_lib.path(point_dir) / sweep_lib.LOG_FILE
    self.local = workdir_lib.is_local(self.target)
    if self.local:
      self.path = os.fspath(self.target)
    else:
      with tempfile.NamedTemporaryFile("w", prefix="alexnet_jax_sweep_", suffix=".log",
                                       delete=False) as f:
        self.path = f.name
        if self.target.exists():
          f.write(self.target.read_text())

  def open(self):
    return open(self.path, "a")

  def publish(self):
    if not self.local:
      with open(self.path) as f:
        self.target.write_text(f.read())

  def tail(self, n):
    with open(self.path, errors="replace") as f:
      return [line.rstrip("\n") for line in f.readlines()[-n:]]


def _dies_with_parent(preexec_fn=None):
  """A preexec_fn: the child gets SIGTERM (saves and exits) when the launcher dies, even by
  SIGKILL, instead of training on as an orphan that holds its point's lock (Linux)."""

  def setup():
    if sys.platform.startswith("linux"):
      import ctypes  # pylint: disable=g-import-not-at-top
      ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if preexec_fn is not None:
      preexec_fn()

  return setup


def run_one(sweep, point, workdir, extra: Sequence[str], *, env=None, preexec_fn=None,
            interrupts: _Interrupts | None = None, log=None) -> int:
  """Trains one point (resuming it if it ran before) and records the outcome.

  Returns the training process's exit code; the point's status becomes
  finished (done.json written), interrupted (a signal came) or failed.
  """
  point_dir = workdir_lib.path(workdir) / point.name
  point_dir.mkdir(parents=True, exist_ok=True)
  argv = sweep.command(point, workdir, extra, python=sys.executable)
  state = sweep_lib.read_point_state(point_dir)
  state.update(name=point.name, overrides=point.overrides, command=argv[1:], status="running",
               attempts=state.get("attempts", 0) + 1, host=os.uname().nodename,
               slurm_job=os.environ.get("SLURM_JOB_ID"))
  state.setdefault("wall_time_sec", 0.0)
  state["started"] = time.time()
  sweep_lib.write_point_state(point_dir, state)
  point_log = _Log(point_dir)
  start = time.time()
  # The local launcher passes the handlers it installed; a lone point installs its own.
  signals = _Interrupts() if interrupts is None else contextlib.nullcontext(interrupts)
  with point_log.open() as out, signals as interrupts:
    out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n")
    out.flush()
    child = subprocess.Popen(argv, env=child_env(env), stdout=out, stderr=subprocess.STDOUT,
                             preexec_fn=_dies_with_parent(preexec_fn))
    interrupts.children.add(child)
    returncode = child.wait()
    interrupts.children.discard(child)
  point_log.publish()
  state["ended"] = time.time()
  state["wall_time_sec"] += state["ended"] - start
  state["returncode"] = returncode
  if sweep_lib.run_finished(point_dir) and returncode == 0:
    state["status"] = "finished"
  elif interrupts.signum is not None or returncode in (-signal.SIGTERM, 128 + signal.SIGTERM):
    state["status"] = "interrupted"
  else:
    state["status"] = "failed"
  sweep_lib.write_point_state(point_dir, state)
  if log is not None:
    log(point, state, point_log)
  return returncode


def run_point(workdir, name: str) -> int:
  """`run_one` for the point `name` of the sweep.json in `workdir` (a SLURM array task)."""
  spec = sweep_lib.read_sweep_file(workdir)
  if not spec:
    raise FileNotFoundError(f"{workdir} has no {sweep_lib.SWEEP_FILE}: run the sweep command "
                            "first.")
  sweep = sweep_lib.Sweep(spec["path"], spec["arg"], [
      sweep_lib.Point(p["name"], p["overrides"]) for p in spec["points"]])
  point = next((p for p in sweep.points if p.name == name), None)
  if point is None:
    raise ValueError(f"{name!r} is not a point of {workdir} ({[p.name for p in sweep.points]}).")
  return run_one(sweep, point, workdir, spec["extra_flags"])


# ----------------------------------------------------------------------------
# Local: one or N points at a time.
# ----------------------------------------------------------------------------


def device_groups(parallel: int, pin_cpu_cores: bool = False) -> tuple[str, list]:
  """(kind, [group per slot]) splitting this machine's devices `parallel` ways.

  kind is "gpu" (groups of CUDA device ids), "tpu" (chip ids) or "cpu" (core
  ids; None per slot, all cores shared, unless `pin_cpu_cores`). Slots get
  equal shares; devices left over are not used.
  """
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  gpus = []
  if visible is not None:
    gpus = [d for d in visible.split(",") if d.strip()]
  else:
    try:
      listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
      gpus = [str(i) for i, line in enumerate(listing.stdout.splitlines())
              if line.startswith("GPU ")]
    except (OSError, subprocess.SubprocessError):
      pass
  chips = [name for name in os.listdir("/dev") if name.startswith("accel")]
  if gpus:
    kind, devices = "gpu", gpus
  elif chips:
    kind, devices = "tpu", [str(i) for i in range(len(chips))]
  else:
    kind, devices = "cpu", sorted(os.sched_getaffinity(0))
  if kind == "cpu" and not pin_cpu_cores:
    return kind, [None] * parallel  # Shared cores: any number of points fits.
  per = len(devices) // parallel
  if per < 1:
    raise ValueError(f"--parallel={parallel} needs at least that many {kind} devices; this "
                     f"machine has {len(devices)}.")
  return kind, [devices[i * per:(i + 1) * per] for i in range(parallel)]


def _slot_settings(kind, group):
  """(environment additions, preexec_fn) that confine a point to its device group."""
  if kind == "gpu":
    return {"CUDA_VISIBLE_DEVICES": ",".join(group)}, None
  if kind == "tpu":
    return {"TPU_VISIBLE_CHIPS": ",".join(group), "TPU_PROCESS_BOUNDS": "1,1,1",
            "TPU_CHIPS_PER_PROCESS_BOUNDS": f"1,{len(group)},1"}, None
  cores = set(group)
  return {}, lambda: os.sched_setaffinity(0, cores)


def _progress(point_dir) -> str:
  records = workdir_lib.read_metrics(point_dir)
  steps = [r["step"] for r in records if "train_loss" in r]
  return f"step {steps[-1]}" if steps else "starting"


def run_local(sweep, points, workdir, extra, *, parallel: int = 1,
              pin_cpu_cores: bool = False) -> int:
  """Trains the points, `parallel` at a time; returns 0, 1 (some failed) or 128+signal."""
  root = workdir_lib.path(workdir)
  lock = threading.Lock()

  def say(msg, *lines):
    with lock:
      print(f"[sweep] {msg}", *(f"    {line}" for line in lines), sep="\n", flush=True)

  todo, skipped = [], []
  for point in points:
    state = sweep_lib.read_point_state(root / point.name)
    if sweep_lib.run_finished(root / point.name) and state.get("command") == sweep.command(
        point, workdir, extra)[1:]:
      say(f"{point.name}: finished already, skipping.")
      skipped.append(point.name)
    else:
      todo.append(point)
  kind, groups = (device_groups(parallel, pin_cpu_cores) if parallel > 1 else ("all", [None]))
  if parallel > 1 and groups[0] is None:
    say(f"{len(todo)} point(s), {parallel} at a time, sharing the "
        f"{len(os.sched_getaffinity(0))} CPU cores (each computes exactly what a sequential "
        "run would)")
  elif parallel > 1:
    say(f"{len(todo)} point(s), {parallel} at a time, each on {len(groups[0])} {kind} "
        f"device(s): {', '.join('[' + ','.join(map(str, g)) + ']' for g in groups)}")
  failed, finished = [], []
  running: dict[str, int] = {}
  free = queue.SimpleQueue()  # slot indices; the pool runs at most len(groups) points at once
  for slot in range(len(groups)):
    free.put(slot)

  def report(point, state, point_log):
    status = state["status"]
    if status == "finished":
      finished.append(point.name)
      say(f"{point.name}: finished in {state['wall_time_sec']:.0f}s.")
    elif status == "failed":
      failed.append(point.name)
      why = f"exit code {state['returncode']}" + (
          "" if state["returncode"] else f", without finishing (no {workdir_lib.DONE_FILE})")
      say(f"{point.name}: FAILED ({why}); last lines of {point_log.target}:",
          *point_log.tail(15))
    else:
      say(f"{point.name}: interrupted; rerun the same command to resume it.")

  def work(index, point):
    if interrupts.signum is not None:
      return
    slot = free.get()
    running[point.name] = slot
    say(f"({index + 1}/{len(todo)}) {point.name}: "
        f"{'resuming' if (root / point.name).exists() else 'starting'}")
    env, preexec = ({}, None) if groups[slot] is None else _slot_settings(kind, groups[slot])
    try:
      run_one(sweep, point, workdir, extra, env=dict(os.environ, **env), preexec_fn=preexec,
              interrupts=interrupts, log=report)
    finally:
      running.pop(point.name, None)
      free.put(slot)

  with _Interrupts() as interrupts, futures.ThreadPoolExecutor(len(groups)) as pool:
    pending = [pool.submit(work, index, point) for index, point in enumerate(todo)]
    while pending:
      done, pending = futures.wait(pending, timeout=30)
      for error in filter(None, (future.exception() for future in done)):
        traceback.print_exception(error)  # the launcher's own error, as a thread would print it
      if running and not done:
        say("running: " + ", ".join(f"{name} ({_progress(root / name)})" for name in list(running))
            + f"; {len(finished)} finished, {len(failed)} failed, "
            f"{len(pending) - len(running)} to start")
  if interrupts.signum is not None:
    say(f"stopped by signal {interrupts.signum}; rerun the same command to go on.")
    return 128 + interrupts.signum
  say(f"done: {len(finished)} finished, {len(skipped)} skipped (finished before), "
      f"{len(failed)} failed.")
  if failed:
    say("failed points (see their sweep.log; rerun to retry):", *failed)
    return 1
  return 0


# ----------------------------------------------------------------------------
# SLURM: one array task per point.
# ----------------------------------------------------------------------------


def _queued_jobs() -> set[str] | None:
  """Job ids SLURM still has pending or running (array tasks as JOB_TASK), or None."""
  try:
    listing = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                             timeout=30)
  except (OSError, subprocess.SubprocessError):
    return None
  return set(listing.stdout.split()) if listing.returncode == 0 else None


def submit_slurm(sweep, points, workdir, options: dict) -> int:
  """Submits the unfinished points as one `sbatch --array` job; returns 0.

  Points already finished are skipped; points whose task SLURM still holds
  (pending or running) are left alone, so a rerun never starts a point twice.
  `options` become `#SBATCH --KEY=VALUE` lines (underscores as dashes:
  gpus_per_task -> --gpus-per-task).
  """
  queued = _queued_jobs()
  names = []
  for point in points:
    point_dir = workdir_lib.path(workdir) / point.name
    state = sweep_lib.read_point_state(point_dir)
    if sweep_lib.run_finished(point_dir):
      print(f"[sweep] {point.name}: finished already, skipping.")
      continue
    if state.get("slurm_task") and queued is not None and state["slurm_task"] in queued:
      print(f"[sweep] {point.name}: still queued or running as {state['slurm_task']}, "
            "leaving it.")
      continue
    names.append(point.name)
  if not names:
    print("[sweep] nothing to submit.")
    return 0
  root = workdir_lib.path(workdir)
  slurm_dir = root / "slurm" if workdir_lib.is_local(root) else workdir_lib.path(
      os.path.expanduser("~/.cache/alexnet_jax/slurm"))
  slurm_dir.mkdir(parents=True, exist_ok=True)
  stamp = time.strftime("%Y%m%d-%H%M%S")
  points_file = slurm_dir / f"points-{stamp}.txt"
  points_file.write_text("".join(n + "\n" for n in names))
  directives = {"job-name": "alexnet-sweep", "output": str(slurm_dir / "%A_%a.out"),
                "array": f"0-{len(names) - 1}", "ntasks": "1"}
  directives.update({k.replace("_", "-"): v for k, v in options.items()})
  script = ["#!/bin/bash"] + [f"#SBATCH --{k}={v}" for k, v in directives.items()] + [
      "set -euo pipefail",
      f"export PYTHONPATH={shlex.quote(code_root())}${{PYTHONPATH:+:$PYTHONPATH}}",
      f"NAME=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {shlex.quote(str(points_file))})",
      f"exec {shlex.quote(sys.executable)} -m alexnet_jax.sweep run-point "
      f"--workdir={shlex.quote(str(root))} --name=\"$NAME\"", ""]
  script_path = slurm_dir / f"sweep-{stamp}.sbatch"
  script_path.write_text("\n".join(script))
  submitted = subprocess.run(["sbatch", "--parsable", str(script_path)], capture_output=True,
                             text=True)
  if submitted.returncode != 0:
    raise RuntimeError(f"sbatch {script_path} failed: {submitted.stderr.strip()}")
  job = submitted.stdout.strip().split(";")[0]
  for index, name in enumerate(names):
    point_dir = root / name
    point_dir.mkdir(parents=True, exist_ok=True)
    state = sweep_lib.read_point_state(point_dir)
    state.update(name=name, status="queued", slurm_task=f"{job}_{index}")
    sweep_lib.write_point_state(point_dir, state)
  print(f"[sweep] submitted {len(names)} point(s) as SLURM job array {job} ({script_path}); "
        f"`python -m alexnet_jax.sweep report --workdir={root}` shows their progress.")
  return 0
