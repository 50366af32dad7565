"""Launching a sweep's points: here (one or N at a time), or as a SLURM job array.

Every launcher runs the same unit, `run_one`: the point's training command,
with its state (`sweep_point.json`: status, command, attempts, wall time)
written before and after, and its output appended to the point's
`sweep.log`. Local runs with `--parallel=N` give each running point its own
share of the machine's accelerators: its GPUs (CUDA_VISIBLE_DEVICES) or TPU
chips (TPU_VISIBLE_CHIPS). On a CPU the points share the cores by default:
XLA:CPU splits its sums by thread count, so a point pinned to fewer cores
would not reproduce a sequential run's numbers (`--pin_cpu_cores` pins anyway,
through the process's affinity). On SLURM each
array task runs `python -m alexnet_jax.sweep run-point`, which calls the same
`run_one`.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Sequence

from alexnet_jax import sweep as sweep_lib
from alexnet_jax import workdir as workdir_lib


def code_root() -> str:
  """The directory this alexnet_jax is imported from (a checkout or site-packages)."""
  import alexnet_jax  # pylint: disable=g-import-not-at-top
  return os.path.dirname(os.path.dirname(os.path.abspath(alexnet_jax.__file__)))


def child_env(env=None) -> dict:
  """The environment of a point's process: this code first on PYTHONPATH.

  A point must run the code that launched it, from whatever directory, whether
  or not the package is installed.
  """
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
      fd, self.path = tempfile.mkstemp(prefix="alexnet_jax_sweep_", suffix=".log")
      os.close(fd)
      try:
        with open(self.path, "w") as f:
          f.write(self.target.read_text())
      except FileNotFoundError:
        pass

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


def run_one(sweep, point, workdir, extra: Sequence[str], *, python=sys.executable, env=None,
            preexec_fn=None, interrupts: _Interrupts | None = None, log=None) -> int:
  """Trains one point (resuming it if it ran before) and records the outcome.

  Returns the training process's exit code; the point's status becomes
  finished (done.json written), interrupted (a signal came) or failed.
  """
  point_dir = workdir_lib.path(workdir) / point.name
  point_dir.mkdir(parents=True, exist_ok=True)
  argv = sweep.command(point, workdir, extra, python=python)
  state = sweep_lib.read_point_state(point_dir)
  state.update(name=point.name, overrides=point.overrides, command=argv[1:], status="running",
               attempts=state.get("attempts", 0) + 1, host=os.uname().nodename,
               slurm_job=os.environ.get("SLURM_JOB_ID"))
  state.setdefault("wall_time_sec", 0.0)
  state["started"] = time.time()
  sweep_lib.write_point_state(point_dir, state)
  own = interrupts is None
  interrupts = interrupts or _Interrupts()
  point_log = _Log(point_dir)
  start = time.time()
  with point_log.open() as out:
    out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n")
    out.flush()
    env = child_env(env)
    if own:
      interrupts.__enter__()
    try:
      child = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                               preexec_fn=_dies_with_parent(preexec_fn))
      interrupts.children.add(child)
      while True:
        try:
          returncode = child.wait()
          break
        except KeyboardInterrupt:  # Ctrl-C reached us first: the child gets SIGTERM.
          interrupts._handle(signal.SIGINT, None)  # pylint: disable=protected-access
      interrupts.children.discard(child)
    finally:
      if own:
        interrupts.__exit__(None, None, None)
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


def run_point(workdir, name: str, *, python: str = sys.executable, log=None) -> int:
  """Runs one point of the sweep in `workdir` (written by a launcher) and records it.

  What a SLURM array task runs (`python -m alexnet_jax.sweep run-point`), and
  the unit of the local launcher: updates sweep_point.json around the run and
  appends the run's output to the point's sweep.log.
  """
  spec = sweep_lib.read_sweep_file(workdir)
  if not spec:
    raise FileNotFoundError(f"{workdir} has no {sweep_lib.SWEEP_FILE}: run the sweep command "
                            "first.")
  sweep = sweep_lib.Sweep(spec["path"], spec["arg"], [
      sweep_lib.Point(p["name"], p["overrides"]) for p in spec["points"]])
  point = next((p for p in sweep.points if p.name == name), None)
  if point is None:
    raise ValueError(f"{name!r} is not a point of {workdir} ({[p.name for p in sweep.points]}).")
  return run_one(sweep, point, workdir, spec["extra_flags"], python=python, log=log)


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
  if gpus:
    kind, devices = "gpu", gpus
  elif any(name.startswith("accel") for name in os.listdir("/dev")):
    kind, devices = "tpu", [str(i) for i in range(len(
        [n for n in os.listdir("/dev") if n.startswith("accel")]))]
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


def run_local(sweep, points, workdir, extra, *, parallel: int = 1, pin_cpu_cores: bool = False,
              out=None) -> int:
  """Trains the points, `parallel` at a time; returns 0, 1 (some failed) or 128+signal."""
  out = out or sys.stdout
  lock = threading.Lock()

  def say(msg):
    with lock:
      print(f"[sweep] {msg}", file=out, flush=True)

  todo, skipped = [], []
  for point in points:
    point_dir = workdir_lib.path(workdir) / point.name
    state = sweep_lib.read_point_state(point_dir)
    if sweep_lib.run_finished(point_dir) and state.get("command") == sweep.command(
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
  free = list(range(len(groups)))
  running: dict[str, int] = {}
  threads = []
  done_event = threading.Condition(lock)

  def report(point, state, point_log):
    status = state["status"]
    if status == "finished":
      finished.append(point.name)
      say(f"{point.name}: finished in {state['wall_time_sec']:.0f}s.")
    elif status == "failed":
      failed.append(point.name)
      why = f"exit code {state['returncode']}" + (
          "" if state["returncode"] else f", without finishing (no {workdir_lib.DONE_FILE})")
      with lock:
        print(f"[sweep] {point.name}: FAILED ({why}); last lines of {point_log.target}:",
              file=out, flush=True)
        for line in point_log.tail(15):
          print(f"    {line}", file=out)
    else:
      say(f"{point.name}: interrupted; rerun the same command to resume it.")

  def work(point, slot):
    env, preexec = ({}, None) if groups[slot] is None else _slot_settings(kind, groups[slot])
    try:
      run_one(sweep, point, workdir, extra, env=dict(os.environ, **env), preexec_fn=preexec,
              interrupts=interrupts, log=report)
    finally:
      with done_event:
        running.pop(point.name, None)
        free.append(slot)
        done_event.notify_all()

  last_progress = time.time()
  with _Interrupts() as interrupts:
    for index, point in enumerate(todo):
      with done_event:
        while not free and interrupts.signum is None:
          done_event.wait(timeout=5)
          if time.time() - last_progress > 30 and running:
            last_progress = time.time()
            print("[sweep] running: " + ", ".join(
                f"{name} ({_progress(workdir_lib.path(workdir) / name)})" for name in running)
                  + f"; {len(finished)} finished, {len(failed)} failed, "
                  f"{len(todo) - index} to start", file=out, flush=True)
        if interrupts.signum is not None:
          break
        slot = free.pop(0)
        running[point.name] = slot
      say(f"({index + 1}/{len(todo)}) {point.name}: "
          f"{'resuming' if (workdir_lib.path(workdir) / point.name).exists() else 'starting'}")
      thread = threading.Thread(target=work, args=(point, slot), daemon=True)
      thread.start()
      threads.append(thread)
    for thread in threads:
      while thread.is_alive():
        thread.join(timeout=5)
        if time.time() - last_progress > 30 and running:
          last_progress = time.time()
          say("running: " + ", ".join(
              f"{name} ({_progress(workdir_lib.path(workdir) / name)})" for name in running))
  if interrupts.signum is not None:
    say(f"stopped by signal {interrupts.signum}; rerun the same command to go on.")
    return 128 + interrupts.signum
  say(f"done: {len(finished)} finished, {len(skipped)} skipped (finished before), "
      f"{len(failed)} failed.")
  if failed:
    say("failed points (see their sweep.log; rerun to retry):")
    for name in failed:
      print(f"    {name}", file=out)
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


def submit_slurm(sweep, points, workdir, options: dict, *, out=None) -> int:
  """Submits the unfinished points as one `sbatch --array` job; returns 0.

  Points already finished are skipped; points whose task SLURM still holds
  (pending or running) are left alone, so a rerun never starts a point twice.
  `options` become `#SBATCH --KEY=VALUE` lines (underscores as dashes:
  gpus_per_task -> --gpus-per-task).
  """
  out = out or sys.stdout
  queued = _queued_jobs()
  names = []
  for point in points:
    point_dir = workdir_lib.path(workdir) / point.name
    state = sweep_lib.read_point_state(point_dir)
    if sweep_lib.run_finished(point_dir):
      print(f"[sweep] {point.name}: finished already, skipping.", file=out)
      continue
    if state.get("slurm_task") and queued is not None and state["slurm_task"] in queued:
      print(f"[sweep] {point.name}: still queued or running as {state['slurm_task']}, "
            "leaving it.", file=out)
      continue
    names.append(point.name)
  if not names:
    print("[sweep] nothing to submit.", file=out)
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
        f"`python -m alexnet_jax.sweep report --workdir={root}` shows their progress.",
        file=out)
  return 0
