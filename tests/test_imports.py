"""The package's imports form a DAG: no module imports one that imports it back.

Every `import` and `from ... import` in alexnet_jax/ counts, deferred
(function-local) ones included: a cycle hidden behind a local import is still
two modules that cannot be read, tested or changed one without the other.
Code under `if __name__ == "__main__":` is not counted: it runs only when the
file is a script, as a module of its own (`__main__`).
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "alexnet_jax"


def _modules() -> dict[str, tuple[pathlib.Path, bool]]:
  """{dotted module name: (file, whether it is a package's __init__)}."""
  modules = {}
  for path in PACKAGE.rglob("*.py"):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
  return modules


def _is_main_guard(node) -> bool:
  test = getattr(node, "test", None)
  return (isinstance(node, ast.If) and isinstance(test, ast.Compare)
          and getattr(test.left, "id", None) == "__name__"
          and any(getattr(c, "value", None) == "__main__" for c in test.comparators))


def _import_nodes(tree):
  """Every Import/ImportFrom node, at any depth, outside `if __name__ == "__main__":`."""
  stack = [tree]
  while stack:
    node = stack.pop()
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      yield node
    stack.extend(child for child in ast.iter_child_nodes(node) if not _is_main_guard(child))


def import_graph() -> dict[str, set[str]]:
  """{module: the package modules it imports}. `from P import x` counts as importing
  P.x when that is a module, else P (a package means its __init__)."""
  modules = _modules()
  graph = {}
  for name, (path, is_package) in modules.items():
    edges = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        edges.update(a.name for a in node.names if a.name in modules)
        continue
      if node.level:  # Relative: resolve against this module's package.
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
      else:
        source = node.module
      for alias in node.names:
        if f"{source}.{alias.name}" in modules:
          edges.add(f"{source}.{alias.name}")
        elif source in modules:
          edges.add(source)
    edges.discard(name)
    graph[name] = edges
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle as [a, b, ..., a], or None when the graph is a DAG."""
  state = {}  # name -> "open" while on the current path, "done" after.
  path: list[str] = []

  def visit(node):
    state[node] = "open"
    path.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    state[node] = "done"
    path.pop()
    return None

  for start in sorted(graph):
    if start not in state:
      found = visit(start)
      if found:
        return found
  return None


def test_the_scan_sees_deferred_relative_and_package_imports():
  graph = import_graph()
  assert "alexnet_jax.data" in graph and "alexnet_jax.models" in graph  # packages: __init__
  assert "alexnet_jax.checkpoint" in graph["alexnet_jax.train"]
  # `from alexnet_jax import data` inside a function of train.py.
  assert "alexnet_jax.data" in graph["alexnet_jax.train"]
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_form_a_dag():
  cycle = find_cycle(import_graph())
  assert cycle is None, "Import cycle: " + " -> ".join(cycle)
