"""The ``flow2onnx`` command: ``export`` a model, list ``plugins``."""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

from .._oneflow import exit_past_teardown
from ..errors import Flow2OnnxError, VerificationError
from ..exporter.options import flags, parse_names, summary_of
from ..lowering.plugin_manager import installed_versions
from .common import last_line, load_callable, parse_shape
from .progress import status_line
from ..signals import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, signals_raise

EXIT_ERROR = 1
EXIT_USAGE = 2




def cmd_export(args) -> int:
    """Export the model that ``MODULE:CALLABLE`` returns, and describe what was written and how it verified."""
    from ..exporter.api import export
    from ..exporter.write.staging import resolve_target

    resolve_target(args.output)  # a path that cannot be written fails before the model is even built
    if args.isolate:  # the worker process builds the model: nothing of it is compiled here
        model, example_inputs = ModelFactory(args.model), _example_arrays(args)
    else:
        model, example_inputs = _model_and_inputs(args)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = export(model, example_inputs, args.output, **_export_options(args))
    elapsed = time.perf_counter() - started
    for warning in caught:
        if issubclass(warning.category, UserWarning) and "flow2onnx" in str(warning.message):
            print(f"flow2onnx: warning: {warning.message}", file=sys.stderr)
    _print_summary(args, result, elapsed)
    _print_verification(args, result)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _model_and_inputs(args):
    """The model built by the user's callable, and random example inputs of the shapes asked for."""
    from .._oneflow import import_oneflow

    flow = import_oneflow()
    arrays = _example_arrays(args)
    return ModelFactory(args.model)(), [flow.tensor(array) for array in arrays]


def _example_arrays(args) -> list:
    """Random float32 example inputs of the shapes asked for (seeded: every run gets the same)."""
    shapes = args.input_shape or [(1, 3, 224, 224)]
    _check_example_size(shapes)
    rng = np.random.default_rng(0)
    return [rng.random(shape, dtype=np.float32) for shape in shapes]


@dataclass(frozen=True)
class ModelFactory:
    """Builds the model ``MODULE:CALLABLE`` names; picklable, so that an isolated export builds it in its worker."""

    spec: str

    def __call__(self):
        from .._oneflow import import_oneflow, quiet_native_output

        flow = import_oneflow()
        factory = load_callable(self.spec)
        with quiet_native_output():
            model = _call_factory(factory, self.spec)
        if not isinstance(model, (flow.nn.Module, flow.nn.Graph)):
            raise Flow2OnnxError(f"{self.spec}() returned a {type(model).__name__}; it must return a oneflow.nn.Module or nn.Graph")
        return model


def _call_factory(factory, spec: str):
    """Call the user's ``MODULE:CALLABLE`` without arguments; its failure is one message."""
    try:
        inspect.signature(factory).bind()
    except TypeError as error:
        raise Flow2OnnxError(
            f"{spec} cannot be called without arguments ({error}); point at a function that builds the model with "
            "no arguments (write one in your own module that fills them in)"
        ) from None
    except ValueError:  # no signature to read (a builtin): just call it
        pass
    try:
        return factory()
    except Exception as error:
        raise Flow2OnnxError(f"{spec}() raised {type(error).__name__}: {last_line(error)}; fix the model's constructor") from error


def _check_example_size(shapes) -> None:
    """Refuse example inputs that cannot fit in memory before allocating them (which could wake the OOM killer)."""
    needed = sum(int(np.prod(shape, dtype=object)) * 4 for shape in shapes)
    available = _available_memory()
    if available is not None and needed > available // 2:
        raise Flow2OnnxError(
            f"--input-shape {' '.join(','.join(map(str, s)) for s in shapes)} needs {needed / 2**30:.1f} GiB for its random "
            f"float32 example inputs, more than half of the {available / 2**30:.1f} GiB of memory available; export with a "
            "smaller example (keep the batch or sizes symbolic with --dynamic-batch / --dynamic-axes)"
        )


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None




def _export_options(args) -> dict:
    """The options of ``flow2onnx.export`` that the command line set (an absent flag: the option's default)."""
    return {
        name: flag.to_option(getattr(args, flag.dest)) if flag.to_option else getattr(args, flag.dest)
        for name, flag, _ in flags() if hasattr(args, flag.dest)
    }


def _add_option_flags(parser, keeps_file: bool, names=None) -> None:
    """The flags of the export options (all, or those ``names``), from their one declaration."""
    for name, flag, default in flags(keeps_file):
        if names is not None and name not in names:
            continue
        keywords = {"help": flag.describe(summary_of(name))}
        if flag.action:
            keywords["action"] = flag.action
        if flag.type is not None:
            keywords["type"] = flag.type if flag.type in (int, float) else _argument_type(flag.type)
        if flag.metavar:
            keywords["metavar"] = flag.metavar
        if flag.choices:
            keywords["choices"], keywords["default"] = flag.choices, default
        parser.add_argument(flag.name, **keywords)


def _argument_type(parse):
    """``parse`` for argparse: its ValueError's message becomes the usage error."""

    def parsed(text: str):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parsed.__name__ = parse.__name__
    return parsed


def _print_summary(args, result, elapsed: float) -> None:
    print(f"exported {args.model} to {result.path} (opset {result.opset}, {sum(result.op_types.values())} ops, {elapsed:.2f} s)")
    symbolic = {name: ", ".join(f"{axis}: {symbol}" for axis, symbol in sorted(axes.items())) for name, axes in result.dynamic_axes.items()}
    print("  inputs:  " + ", ".join(f"{name} (symbolic {symbolic[name]})" if name in symbolic else name for name in result.input_names))
    print(f"  outputs: {', '.join(result.output_names)}")
    print(f"  capture: {result.capture} ({result.capture_reason})" if result.capture_reason else f"  capture: {result.capture}")
    print(f"  op types: {', '.join(f'{name} x{count}' for name, count in sorted(result.op_types.items()))}")
    print("  timings: " + ", ".join(f"{phase} {seconds:.3f} s" for phase, seconds in result.timings.items()))
    for pattern, plugin in sorted(result.patterns.items()):
        groups = ", ".join(group for group, name in result.pattern_groups.items() if name == pattern)
        print(f"  pattern: {pattern} ({plugin}) lowered {groups} as a whole")
    for op_type, note in sorted(result.overrides.items()):
        print(f"  override: {op_type} lowered by {note}")
    if result.custom_domains:
        print("  custom domains: " + ", ".join(f"{d} v{v}" for d, v in sorted(result.custom_domains.items())))
    if result.post_passes:
        print(f"  post-passes: {', '.join(result.post_passes)}")
    if result.bundle_dir:
        print(f"  repro bundle: {result.bundle_dir}")


def _print_verification(args, result) -> None:
    if result.report is None:
        print(f"NOT VERIFIED: {result.verification_skipped}" if result.verification_skipped else "not verified (--no-verify)")
        return
    print(result.report.to_text(outliers=args.print_outlier))
    if result.divergence is not None:
        print(result.divergence.to_text())
    elif result.bisected:
        print("first-divergence finder: every intermediate tensor OneFlow exposes matches")
    if args.report:
        _write_report(result.report, args.report)


def _write_report(report, path: str) -> None:
    text = report.to_json() if path.endswith(".json") else report.to_markdown() if path.endswith(".md") else report.to_text(outliers=True)
    try:
        with open(path, "w") as file:
            file.write(text + "\n")
    except OSError as error:
        raise Flow2OnnxError(f"cannot write the report to {path}: {error.strerror or error}") from error


def _add_model_arguments(parser, keeps_file: bool) -> None:
    parser.add_argument("model", metavar="MODULE:CALLABLE", help="a callable returning a oneflow.nn.Module or nn.Graph, e.g. flowvision.models:resnet18")
    parser.add_argument("--input-shape", type=parse_shape, action="append", metavar="N,C,H,W", help="shape of an example input (repeat for several inputs; default 1,3,224,224)")
    if keeps_file:
        parser.add_argument("-o", "--output", default="model.onnx", help="the .onnx file to write (default: model.onnx)")
    _add_option_flags(parser, keeps_file)
    parser.add_argument("--report", metavar="FILE", help="also write the verification report: .json, .md (Markdown) or text")


def cmd_check(args) -> int:
    from ..exporter.write.staging import scratch_folder

    with scratch_folder("flow2onnx-check") as directory:
        args.output = os.path.join(directory, "model.onnx")
        return cmd_export(args)


def cmd_plugins(args) -> int:
    from ..lowering.plugin_manager import load_plugins

    print(plugins_table(load_plugins(disable=args.disable_plugin or (), only=parse_names(args.only_plugins))), end="")
    return 0


def plugins_table(loaded) -> str:
    """``flow2onnx plugins``: each plugin with its distribution, lowerings (a count), the names it
    registered (patterns, marked so, post-passes, verifiers, runtime libraries) and hooks; then overrides."""
    rows = [("plugin", "version", "lowerings", "patterns / post-passes / verifiers", "hooks")]
    notes = []
    for info in loaded.plugins.values():
        named = ", ".join([f"{name} (pattern)" for name in info.patterns] + info.post_passes + info.verifiers + info.runtime_libraries) or "-"
        hooks = ", ".join(hook.replace("flow2onnx_", "") for hook in info.hooks) or "-"
        name = info.name + (" (essential)" if info.essential else "")
        rows.append((name, info.origin, str(info.lowerings), named, hooks))
        for op_type, others in sorted(info.overrides.items()):
            notes.append(f"override: {info.name} lowers {op_type} in place of {', '.join(others)}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + notes) + "\n"


class _VersionAction(argparse.Action):
    """``--version``: one line per installed distribution, as ``pip --version`` and ``pytest --version`` do."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        rows = installed_versions()
        width = max(len(name) for name, _, _ in rows)
        print(f"flow2onnx {rows[0][1]} (Python {sys.version.split()[0]})")
        for name, version, what in rows:
            print(f"  {name.ljust(width)}  {version:<14} {what}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flow2onnx", description="Export OneFlow models to ONNX, verified on ONNX Runtime.")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only results and errors")
    parser.add_argument("--version", action=_VersionAction, help="print the versions of flow2onnx, its plugin families and the libraries it runs on, and exit")
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="export a model returned by MODULE:CALLABLE")
    _add_model_arguments(export, keeps_file=True)
    export.set_defaults(run=cmd_export)

    check = commands.add_parser("check", help="export to a temporary file and verify, without keeping the model")
    _add_model_arguments(check, keeps_file=False)
    check.set_defaults(run=cmd_check)

    plugins = commands.add_parser("plugins", help="list the plugins loaded and what they register")
    _add_option_flags(plugins, keeps_file=False, names=("disable_plugins", "only_plugins"))
    plugins.set_defaults(run=cmd_plugins)

    from .run import add_runtime_commands

    add_runtime_commands(commands)

    from .ops import add_ops_command

    add_ops_command(commands)
    return parser


def _print_error(error: Flow2OnnxError, args) -> None:
    """Show an error: its details first, then one ``flow2onnx: error:`` line naming the cause and the fix.

    A verification report and the first divergence go to stdout, where a successful export prints
    them; the detail lines of the message (those it indents, such as the list of unsupported ops)
    go to stderr, above the error line, so that the error line is always the last one.
    """
    if isinstance(error, VerificationError) and error.report is not None:
        print(error.report.to_text(outliers=getattr(args, "print_outlier", False)))
        if error.divergence is not None:
            print(error.divergence.to_text())
        sys.stdout.flush()
    details, line = error_lines(str(error))
    for detail in details:
        print(detail, file=sys.stderr)
    print(f"flow2onnx: error: {line}", file=sys.stderr)


def error_lines(message: str) -> tuple[list[str], str]:
    """Split an error message into its detail lines (the indented ones) and one line of the rest.

    A line that introduces details (ending in ``:``) says that they are listed above instead.
    """
    lines = message.splitlines()
    details, summary = [], []
    for index, line in enumerate(lines):
        if line[:1].isspace():
            details.append(line)
        elif line.strip():
            text = line.strip()
            if text.endswith(":") and lines[index + 1 : index + 2] and lines[index + 1][:1].isspace():
                text = text[:-1] + " (listed above)."
            summary.append(text)
    if not summary and details:  # nothing but details: the first one has to say it
        summary.append(details.pop(0).strip())
    return details, " ".join(summary)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="flow2onnx: %(message)s", stream=sys.stderr)
    try:
        with signals_raise(), status_line(args.quiet):
            return args.run(args)
    except Flow2OnnxError as error:
        _print_error(error, args)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("flow2onnx: interrupted (Ctrl-C); nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("flow2onnx: terminated (SIGTERM); nothing was written", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def console() -> None:
    """The ``flow2onnx`` command: :func:`main`, then an exit past OneFlow's native teardown
    (:func:`flow2onnx._oneflow.exit_past_teardown`): once :func:`main` has returned, every file is in
    place and every message printed."""
    exit_past_teardown(main())


if __name__ == "__main__":
    console()
