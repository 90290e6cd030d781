"""The import rules between the package's sides (docs/ARCHITECTURE.md), checked in fresh Python
processes (what is already imported in the test process says nothing) and by reading server/.

- `tb_attention_plugin.server.loader` imports nothing heavy: TensorBoard imports every entry
  point at startup, so numpy, the plugin module and its helpers load in `load()`.
- Every module of `tb_attention_plugin.server` runs in TensorBoard without keras or tensorflow:
  importing it imports neither, and no line of server/ imports them, not even inside a function.
- server/ takes from the rest of the package only the shared, numpy-only modules.
- The shared top-level modules (format, statistics, the TF-free writer) import no keras or
  tensorflow: the server and the Keras side both use them.
"""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tb_attention_plugin"
SERVER = PACKAGE / "server"
SERVER_MODULES = sorted(
    "tb_attention_plugin.server" + ("" if p.stem == "__init__" else "." + p.stem)
    for p in SERVER.glob("*.py")
)
FORBIDDEN = ("tensorflow", "keras", "tf_keras")
# What server/ may import from the rest of the package: the shared, numpy-only modules.
SHARED = ("metadata", "encoding", "png", "stats", "health", "health_summary")


def modules_after_import(*names):
    """For each of `names`, imported in that order in one fresh interpreter, the top-level
    packages and `tb_attention_plugin` modules that importing it added to `sys.modules`."""
    code = (
        "import json, sys, importlib\n"
        "added = []\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    before = set(sys.modules)\n"
        "    importlib.import_module(name)\n"
        "    new = set(sys.modules) - before\n"
        "    added.append(sorted({m.split('.')[0] for m in new}\n"
        "                        | {m for m in new if m.startswith('tb_attention_plugin')}))\n"
        "print(json.dumps(added))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(list(names))],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_server_modules_are_found():
    assert "tb_attention_plugin.server.loader" in SERVER_MODULES
    assert "tb_attention_plugin.server.plugin" in SERVER_MODULES
    assert "tb_attention_plugin.server.reader" in SERVER_MODULES


def test_loader_imports_nothing_heavy():
    (added,) = modules_after_import("tb_attention_plugin.server.loader")
    for heavy in ("numpy",) + FORBIDDEN:
        assert heavy not in added, added
    ours = [m for m in added if m.startswith("tb_attention_plugin")]
    assert ours == [
        "tb_attention_plugin", "tb_attention_plugin.server", "tb_attention_plugin.server.loader"
    ], ours  # not the plugin module, nor the reader, nor any helper


def test_importing_every_server_module_imports_no_keras_or_tensorflow():
    added = modules_after_import(*SERVER_MODULES)
    for name, new in zip(SERVER_MODULES, added):
        assert not set(new) & set(FORBIDDEN), (name, new)
    # The heaviest of them pulls in the whole server, and still no Keras or TensorFlow.
    (everything,) = modules_after_import("tb_attention_plugin.server.plugin")
    assert "tb_attention_plugin.server.aggregates" in everything
    assert not set(everything) & set(FORBIDDEN), everything


@pytest.mark.parametrize("name", ["metadata", "encoding", "step_inputs", "step_header",
                                  "step_payload", "step_facts", "codes_v1", "codes_v2", "pooled_step", "png",
                                  "stats", "health", "health_stream", "health_summary", "writer"])
def test_shared_top_level_modules_import_no_keras_or_tensorflow(name):
    if not (PACKAGE / (name + ".py")).exists():
        pytest.skip("tb_attention_plugin/%s.py is not in this checkout" % name)
    (added,) = modules_after_import("tb_attention_plugin." + name)
    assert not set(added) & set(FORBIDDEN), added


def test_the_package_itself_imports_nothing_heavy():
    (added,) = modules_after_import("tb_attention_plugin")
    assert added == ["tb_attention_plugin"], added


def imported_names(path):
    """`(line, module)` of every import in a file, at any depth (functions, `try` blocks), with
    relative imports resolved against the server package and `importlib.import_module("x")`
    calls with a literal name included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = "tb_attention_plugin.server".rsplit(".", node.level - 1)[0]
                module = base + ("." + node.module if node.module else "")
            else:
                module = node.module
            found.append((node.lineno, module))
            found += [(node.lineno, module + "." + alias.name) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


@pytest.mark.parametrize("path", sorted(SERVER.glob("*.py")), ids=lambda p: p.name)
def test_no_line_of_server_imports_keras_tensorflow_or_the_keras_side(path):
    for line, module in imported_names(path):
        top = module.split(".")[0]
        assert top not in FORBIDDEN, "%s:%d imports %s" % (path.name, line, module)
        if top == "tb_attention_plugin" and module != "tb_attention_plugin":
            room = module.split(".")[1]
            assert room == "server" or room in SHARED, (
                "%s:%d imports %s; server/ may use only server/ and %s"
                % (path.name, line, module, ", ".join(SHARED))
            )


def server_import_graph():
    """`{module stem: {server module stems it imports, at any depth}}` over server/."""
    stems = {p.stem for p in SERVER.glob("*.py")}
    graph = {}
    for path in SERVER.glob("*.py"):
        graph[path.stem] = {
            module.split(".")[2] for _, module in imported_names(path)
            if module.startswith("tb_attention_plugin.server.") and module.split(".")[2] in stems
        } - {path.stem}
    return graph


def test_server_modules_import_each_other_without_a_cycle():
    """Importing a module that imports you back works only by accident of order (a lazy import
    inside a function): server/ forms no such circle, and only plugin.py imports route modules."""
    graph = server_import_graph()
    done, path = set(), []

    def visit(stem):
        assert stem not in path, "import cycle: %s" % " -> ".join(path[path.index(stem):] + [stem])
        if stem in done:
            return
        path.append(stem)
        for imported in sorted(graph[stem]):
            visit(imported)
        path.pop()
        done.add(stem)

    for stem in sorted(graph):
        visit(stem)
    routes = {stem for stem in graph if stem.endswith("_routes")}
    assert routes >= {"aggregate_routes", "health_routes", "export_routes"}
    importers = {stem for stem, imported in graph.items() if imported & routes}
    assert importers == {"plugin"}, importers


def test_the_static_scan_sees_imports_inside_functions(tmp_path):
    """The scan above must catch what a lazy import would hide from a plain import check."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def load():\n"
        "    import tensorflow as tf\n"
        "    from keras import layers\n"
        "    from tb_attention_plugin import callback\n"
        "    return importlib.import_module('keras.src')\n"
    )
    modules = [module for _, module in imported_names(sample)]
    assert "tensorflow" in modules and "keras" in modules and "keras.src" in modules
    assert "tb_attention_plugin.callback" in modules
